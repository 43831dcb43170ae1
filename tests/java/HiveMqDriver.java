// The HiveMQ MQTT client (com.hivemq:hivemq-mqtt-client), MQTT 5 or 3.1.1, publishing and
// subscribing through barnabas' MQTT listener, for tests/java_clients.rs.
//
//   HiveMqDriver.java publish   HOST PORT 5|3 CLIENT_ID [QOS TOPIC PAYLOAD]…
//   HiveMqDriver.java subscribe HOST PORT 5|3 CLIENT_ID FILTER QOS COUNT TIMEOUT_MS
//
// publish sends each message in turn (QoS 1 and 2 wait for their acknowledgement; a v5
// failure reason code is an error) and prints {"published","topic","qos"} for each; v5
// publishes carry the user properties n = their index and client = hivemq. subscribe prints
// {"subscribed","granted"} once the SUBACK came (granted: the QoS, or the failure code), then
// {"topic","payload","qos","retained","user_properties":[[name, value]…]} per message; after
// COUNT messages it listens 500 ms more (anything extra is printed too) and exits. Exits 1 on
// any error, 2 on timeout.
import com.hivemq.client.mqtt.MqttGlobalPublishFilter;
import com.hivemq.client.mqtt.datatypes.MqttQos;
import com.hivemq.client.mqtt.mqtt3.Mqtt3BlockingClient;
import com.hivemq.client.mqtt.mqtt3.message.publish.Mqtt3Publish;
import com.hivemq.client.mqtt.mqtt5.Mqtt5BlockingClient;
import com.hivemq.client.mqtt.mqtt5.datatypes.Mqtt5UserProperty;
import com.hivemq.client.mqtt.mqtt5.message.publish.Mqtt5Publish;
import java.nio.charset.StandardCharsets;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

public class HiveMqDriver {
    public static void main(String[] args) {
        try {
            if (args.length >= 5 && args[0].equals("publish") && (args.length - 5) % 3 == 0) {
                Drivers.watchdog("HiveMqDriver", 60_000);
                if (args[3].equals("5")) publish5(args); else publish3(args);
            } else if (args.length == 9 && args[0].equals("subscribe")) {
                Drivers.watchdog("HiveMqDriver", Long.parseLong(args[8]));
                if (args[3].equals("5")) subscribe5(args); else subscribe3(args);
            } else {
                throw new IllegalArgumentException("usage: HiveMqDriver.java publish HOST PORT 5|3 CLIENT_ID [QOS TOPIC PAYLOAD]… | "
                        + "subscribe HOST PORT 5|3 CLIENT_ID FILTER QOS COUNT TIMEOUT_MS");
            }
            System.exit(0);
        } catch (Throwable e) {
            System.err.println("HiveMqDriver: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static Mqtt5BlockingClient client5(String[] args) {
        Mqtt5BlockingClient c = com.hivemq.client.mqtt.MqttClient.builder().identifier(args[4]).serverHost(args[1])
                .serverPort(Integer.parseInt(args[2])).useMqttVersion5().buildBlocking();
        c.connectWith().cleanStart(true).send();
        return c;
    }

    static Mqtt3BlockingClient client3(String[] args) {
        Mqtt3BlockingClient c = com.hivemq.client.mqtt.MqttClient.builder().identifier(args[4]).serverHost(args[1])
                .serverPort(Integer.parseInt(args[2])).useMqttVersion3().buildBlocking();
        c.connectWith().cleanSession(true).send();
        return c;
    }

    static void publish5(String[] args) {
        Mqtt5BlockingClient c = client5(args);
        for (int i = 5, n = 0; i < args.length; i += 3, n++) {
            MqttQos qos = MqttQos.fromCode(Integer.parseInt(args[i]));
            // Throws on a failure reason code in the PUBACK / PUBREC.
            c.publishWith().topic(args[i + 1]).qos(qos).payload(args[i + 2].getBytes(StandardCharsets.UTF_8))
                    .userProperties().add("n", String.valueOf(n)).add("client", "hivemq").applyUserProperties()
                    .send();
            published(args[i + 2], args[i + 1], qos);
        }
        c.disconnect();
    }

    static void publish3(String[] args) {
        Mqtt3BlockingClient c = client3(args);
        for (int i = 5; i < args.length; i += 3) {
            MqttQos qos = MqttQos.fromCode(Integer.parseInt(args[i]));
            c.publishWith().topic(args[i + 1]).qos(qos).payload(args[i + 2].getBytes(StandardCharsets.UTF_8)).send();
            published(args[i + 2], args[i + 1], qos);
        }
        c.disconnect();
    }

    static void published(String payload, String topic, MqttQos qos) {
        System.out.println("{\"published\":" + Drivers.q(payload) + ",\"topic\":" + Drivers.q(topic) + ",\"qos\":" + qos.getCode() + "}");
    }

    static void subscribe5(String[] args) throws InterruptedException {
        Mqtt5BlockingClient c = client5(args);
        try (Mqtt5BlockingClient.Mqtt5Publishes publishes = c.publishes(MqttGlobalPublishFilter.ALL)) {
            var ack = c.subscribeWith().topicFilter(args[5]).qos(MqttQos.fromCode(Integer.parseInt(args[6]))).send();
            System.out.println("{\"subscribed\":" + Drivers.q(args[5]) + ",\"granted\":" + ack.getReasonCodes().get(0).getCode() + "}");
            int count = Integer.parseInt(args[7]);
            for (int got = 0; ; got++) {
                Optional<Mqtt5Publish> m = got < count ? Optional.of(publishes.receive()) : publishes.receive(500, TimeUnit.MILLISECONDS);
                if (m.isEmpty()) break;
                Mqtt5Publish p = m.get();
                StringBuilder props = new StringBuilder("[");
                for (Mqtt5UserProperty u : p.getUserProperties().asList()) {
                    if (props.length() > 1) props.append(',');
                    props.append('[').append(Drivers.q(u.getName().toString())).append(',').append(Drivers.q(u.getValue().toString())).append(']');
                }
                System.out.println("{\"topic\":" + Drivers.q(p.getTopic().toString()) + ",\"payload\":"
                        + Drivers.q(new String(p.getPayloadAsBytes(), StandardCharsets.UTF_8)) + ",\"qos\":" + p.getQos().getCode()
                        + ",\"retained\":" + p.isRetain() + ",\"user_properties\":" + props.append(']') + "}");
            }
        }
        c.disconnect();
    }

    static void subscribe3(String[] args) throws InterruptedException {
        Mqtt3BlockingClient c = client3(args);
        try (Mqtt3BlockingClient.Mqtt3Publishes publishes = c.publishes(MqttGlobalPublishFilter.ALL)) {
            var ack = c.subscribeWith().topicFilter(args[5]).qos(MqttQos.fromCode(Integer.parseInt(args[6]))).send();
            System.out.println("{\"subscribed\":" + Drivers.q(args[5]) + ",\"granted\":" + ack.getReturnCodes().get(0).getCode() + "}");
            int count = Integer.parseInt(args[7]);
            for (int got = 0; ; got++) {
                Optional<Mqtt3Publish> m = got < count ? Optional.of(publishes.receive()) : publishes.receive(500, TimeUnit.MILLISECONDS);
                if (m.isEmpty()) break;
                Mqtt3Publish p = m.get();
                System.out.println("{\"topic\":" + Drivers.q(p.getTopic().toString()) + ",\"payload\":"
                        + Drivers.q(new String(p.getPayloadAsBytes(), StandardCharsets.UTF_8)) + ",\"qos\":" + p.getQos().getCode()
                        + ",\"retained\":" + p.isRetain() + ",\"user_properties\":[]}");
            }
        }
        c.disconnect();
    }
}
