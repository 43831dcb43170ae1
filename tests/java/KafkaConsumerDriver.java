// The Apache Kafka Java consumer (kafka-clients) reading a topic from its beginning, for
// tests/java_clients.rs: what barnabas wrote for each protocol, as a Kafka user sees it.
//
//   KafkaConsumerDriver.java BOOTSTRAP TOPIC COUNT TIMEOUT_MS
//
// Assigns every partition of TOPIC (no group), reads until COUNT records arrived, and prints
// one JSON line per record: {"partition","offset","key","value","headers":[[name, value]…]}
// (key, value and header values as UTF-8 text, or null), then {"end_offsets":{partition:
// offset…}} so that a test can tell that nothing else is there. Exits 1 on any error, 2 on
// timeout.
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.TreeMap;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

public class KafkaConsumerDriver {
    public static void main(String[] args) {
        try {
            if (args.length != 4) {
                throw new IllegalArgumentException("usage: KafkaConsumerDriver.java BOOTSTRAP TOPIC COUNT TIMEOUT_MS");
            }
            long timeoutMs = Long.parseLong(args[3]);
            Drivers.watchdog("KafkaConsumerDriver", timeoutMs);
            read(args[0], args[1], Integer.parseInt(args[2]), timeoutMs);
            System.exit(0);
        } catch (Throwable e) {
            System.err.println("KafkaConsumerDriver: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static void read(String bootstrap, String topic, int count, long timeoutMs) {
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.CLIENT_ID_CONFIG, "barnabas-java-consumer");
        try (KafkaConsumer<byte[], byte[]> consumer =
                new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
            List<PartitionInfo> infos = consumer.partitionsFor(topic, Duration.ofMillis(timeoutMs));
            if (infos == null || infos.isEmpty()) {
                throw new IllegalStateException("topic " + topic + " has no partitions");
            }
            List<TopicPartition> partitions = new ArrayList<>();
            for (PartitionInfo p : infos) {
                partitions.add(new TopicPartition(topic, p.partition()));
            }
            consumer.assign(partitions);
            consumer.seekToBeginning(partitions);
            int got = 0;
            while (got < count) {
                for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
                    StringBuilder headers = new StringBuilder("[");
                    for (Header h : r.headers()) {
                        if (headers.length() > 1) headers.append(',');
                        headers.append('[').append(Drivers.q(h.key())).append(',').append(Drivers.q(text(h.value()))).append(']');
                    }
                    headers.append(']');
                    System.out.println("{\"partition\":" + r.partition() + ",\"offset\":" + r.offset()
                            + ",\"key\":" + Drivers.q(text(r.key())) + ",\"value\":" + Drivers.q(text(r.value()))
                            + ",\"headers\":" + headers + "}");
                    got++;
                }
            }
            Map<Integer, Long> ends = new TreeMap<>();
            consumer.endOffsets(partitions, Duration.ofMillis(timeoutMs))
                    .forEach((tp, end) -> ends.put(tp.partition(), end));
            StringBuilder line = new StringBuilder("{\"end_offsets\":{");
            ends.forEach((p, end) -> {
                if (line.charAt(line.length() - 1) != '{') line.append(',');
                line.append('"').append(p).append("\":").append(end);
            });
            System.out.println(line.append("}}"));
        }
    }

    static String text(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }
}
