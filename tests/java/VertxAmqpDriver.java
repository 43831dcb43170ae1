// The Vert.x AMQP client (io.vertx:vertx-amqp-client, over vertx-proton) sending and
// receiving through barnabas' AMQP listener, for tests/java_clients.rs.
//
//   VertxAmqpDriver.java send    HOST PORT ADDRESS [KEY PARTITION PAYLOAD]…
//   VertxAmqpDriver.java receive HOST PORT SOURCE COUNT TIMEOUT_MS
//
// send: a sender on ADDRESS (`T` or `T/partitions/P`) sends each PAYLOAD as an amqp-value
// string and waits for its `accepted` outcome (anything else is an error), with message-id
// vertx-{n}, correlation-id corr-{n}, subject greeting, content-type text/plain, the
// application properties n = its index (int) and client = vertx, and the message annotations
// x-opt-kafka-key = KEY and x-opt-kafka-partition = PARTITION (int) unless given as "-";
// prints {"sent"} for each. receive: a receiver on SOURCE (`T/group.id/G`) accepts COUNT
// messages and prints {"body","topic","partition","offset","key","message_id",
// "correlation_id","subject","content_type","properties":{name: value as text}} for each,
// then waits 500 ms for anything extra (printed too). Exits 1 on any error, 2 on timeout.
import io.vertx.amqp.AmqpClient;
import io.vertx.amqp.AmqpClientOptions;
import io.vertx.amqp.AmqpConnection;
import io.vertx.amqp.AmqpMessage;
import io.vertx.amqp.AmqpReceiver;
import io.vertx.amqp.AmqpReceiverOptions;
import io.vertx.amqp.AmqpSender;
import io.vertx.core.Future;
import io.vertx.core.Vertx;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.apache.qpid.proton.amqp.Binary;
import org.apache.qpid.proton.amqp.Symbol;
import org.apache.qpid.proton.amqp.messaging.AmqpValue;
import org.apache.qpid.proton.amqp.messaging.ApplicationProperties;
import org.apache.qpid.proton.amqp.messaging.MessageAnnotations;
import org.apache.qpid.proton.message.Message;

public class VertxAmqpDriver {
    public static void main(String[] args) {
        try {
            if (args.length >= 4 && args[0].equals("send") && (args.length - 4) % 3 == 0) {
                Drivers.watchdog("VertxAmqpDriver", 60_000);
                send(args);
            } else if (args.length == 6 && args[0].equals("receive")) {
                Drivers.watchdog("VertxAmqpDriver", Long.parseLong(args[5]));
                receive(args[1], Integer.parseInt(args[2]), args[3], Integer.parseInt(args[4]));
            } else {
                throw new IllegalArgumentException("usage: VertxAmqpDriver.java send HOST PORT ADDRESS [KEY PARTITION PAYLOAD]… | "
                        + "receive HOST PORT SOURCE COUNT TIMEOUT_MS");
            }
            System.exit(0);
        } catch (Throwable e) {
            System.err.println("VertxAmqpDriver: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static <T> T await(Future<T> f) throws Exception {
        return f.toCompletionStage().toCompletableFuture().get(30, TimeUnit.SECONDS);
    }

    static AmqpConnection connect(String host, int port) throws Exception {
        AmqpClient client = AmqpClient.create(Vertx.vertx(), new AmqpClientOptions().setHost(host).setPort(port));
        AmqpConnection c = await(client.connect());
        c.exceptionHandler(e -> {
            System.err.println("VertxAmqpDriver: connection error: " + e);
            Runtime.getRuntime().halt(1);
        });
        return c;
    }

    static void send(String[] args) throws Exception {
        AmqpConnection c = connect(args[1], Integer.parseInt(args[2]));
        AmqpSender sender = await(c.createSender(args[3]));
        for (int i = 4, n = 0; i < args.length; i += 3, n++) {
            Message m = Message.Factory.create();
            m.setBody(new AmqpValue(args[i + 2]));
            m.setMessageId("vertx-" + n);
            m.setCorrelationId("corr-" + n);
            m.setSubject("greeting");
            m.setContentType("text/plain");
            Map<String, Object> props = new LinkedHashMap<>();
            props.put("n", n);
            props.put("client", "vertx");
            m.setApplicationProperties(new ApplicationProperties(props));
            Map<Symbol, Object> annotations = new LinkedHashMap<>();
            if (!args[i].equals("-")) annotations.put(Symbol.valueOf("x-opt-kafka-key"), args[i]);
            if (!args[i + 1].equals("-")) annotations.put(Symbol.valueOf("x-opt-kafka-partition"), Integer.parseInt(args[i + 1]));
            m.setMessageAnnotations(new MessageAnnotations(annotations));
            // Fails unless the outcome is `accepted`.
            await(sender.sendWithAck(AmqpMessage.create(m).build()));
            System.out.println("{\"sent\":" + Drivers.q(args[i + 2]) + "}");
        }
        await(sender.close());
        await(c.close());
    }

    static void receive(String host, int port, String source, int count) throws Exception {
        AmqpConnection c = connect(host, port);
        BlockingQueue<AmqpMessage> got = new LinkedBlockingQueue<>();
        AmqpReceiver receiver = await(c.createReceiver(source, new AmqpReceiverOptions().setAutoAcknowledgement(true)));
        receiver.exceptionHandler(e -> {
            System.err.println("VertxAmqpDriver: receiver error: " + e);
            Runtime.getRuntime().halt(1);
        });
        receiver.handler(got::add);
        for (int n = 0; ; n++) {
            // Blocks until a message comes (the watchdog bounds it); then 500 ms for extras.
            AmqpMessage m = n < count ? got.take() : got.poll(500, TimeUnit.MILLISECONDS);
            if (m == null) break;
            Map<Symbol, Object> ann = m.unwrap().getMessageAnnotations() == null
                    ? Map.of() : m.unwrap().getMessageAnnotations().getValue();
            StringBuilder props = new StringBuilder("{");
            m.applicationProperties().forEach(e -> {
                if (props.length() > 1) props.append(',');
                props.append(Drivers.q(e.getKey())).append(':').append(Drivers.q(String.valueOf(e.getValue())));
            });
            System.out.println("{\"body\":" + Drivers.q(m.bodyAsBinary().toString(StandardCharsets.UTF_8))
                    + ",\"topic\":" + Drivers.q(text(ann.get(Symbol.valueOf("x-opt-kafka-topic"))))
                    + ",\"partition\":" + ann.get(Symbol.valueOf("x-opt-kafka-partition"))
                    + ",\"offset\":" + ann.get(Symbol.valueOf("x-opt-kafka-offset"))
                    + ",\"key\":" + Drivers.q(text(ann.get(Symbol.valueOf("x-opt-kafka-key"))))
                    + ",\"message_id\":" + Drivers.q(m.id()) + ",\"correlation_id\":" + Drivers.q(m.correlationId())
                    + ",\"subject\":" + Drivers.q(m.subject()) + ",\"content_type\":" + Drivers.q(m.contentType())
                    + ",\"properties\":" + props.append('}') + "}");
        }
        await(receiver.close());
        await(c.close());
    }

    /** An annotation as text: strings as they are, binary as UTF-8. */
    static String text(Object v) {
        if (v == null) return null;
        if (v instanceof Binary b) return new String(b.getArray(), b.getArrayOffset(), b.getLength(), StandardCharsets.UTF_8);
        return v.toString();
    }
}
