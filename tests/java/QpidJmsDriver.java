// Apache Qpid JMS (org.apache.qpid:qpid-jms-client, Jakarta JMS over AMQP 1.0) sending and
// receiving through barnabas' AMQP listener, for tests/java_clients.rs.
//
//   QpidJmsDriver.java send    amqp://HOST:PORT ADDRESS PAYLOAD…
//   QpidJmsDriver.java receive amqp://HOST:PORT SOURCE COUNT TIMEOUT_MS
//
// send: a producer on the JMS queue ADDRESS (the link's target: `T` or `T/partitions/P`)
// sends one persistent TextMessage per PAYLOAD (a persistent send waits for the `accepted`
// outcome, and throws on any other), with the int property n = its index, the string
// property client = qpid-jms and the correlation id corr-{n}; prints {"sent","message_id"}
// for each. receive: a consumer on the JMS queue SOURCE (`T/group.id/G`) receives COUNT
// messages and acknowledges them (AUTO_ACKNOWLEDGE); prints {"type","body","message_id",
// "correlation_id","properties":{name: value as text}} for each, then waits 500 ms for
// anything extra (printed too). Exits 1 on any error, 2 on timeout.
import jakarta.jms.BytesMessage;
import jakarta.jms.Connection;
import jakarta.jms.DeliveryMode;
import jakarta.jms.Message;
import jakarta.jms.MessageConsumer;
import jakarta.jms.MessageProducer;
import jakarta.jms.Session;
import jakarta.jms.TextMessage;
import java.nio.charset.StandardCharsets;
import java.util.Enumeration;
import org.apache.qpid.jms.JmsConnectionFactory;

public class QpidJmsDriver {
    public static void main(String[] args) {
        try {
            if (args.length >= 3 && args[0].equals("send")) {
                Drivers.watchdog("QpidJmsDriver", 60_000);
                send(args);
            } else if (args.length == 5 && args[0].equals("receive")) {
                long timeoutMs = Long.parseLong(args[4]);
                Drivers.watchdog("QpidJmsDriver", timeoutMs);
                receive(args[1], args[2], Integer.parseInt(args[3]));
            } else {
                throw new IllegalArgumentException("usage: QpidJmsDriver.java send URL ADDRESS PAYLOAD… | "
                        + "receive URL SOURCE COUNT TIMEOUT_MS");
            }
            System.exit(0);
        } catch (Throwable e) {
            System.err.println("QpidJmsDriver: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static void send(String[] args) throws Exception {
        try (Connection c = new JmsConnectionFactory(args[1]).createConnection()) {
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageProducer p = s.createProducer(s.createQueue(args[2]));
            p.setDeliveryMode(DeliveryMode.PERSISTENT);
            for (int i = 3, n = 0; i < args.length; i++, n++) {
                TextMessage m = s.createTextMessage(args[i]);
                m.setIntProperty("n", n);
                m.setStringProperty("client", "qpid-jms");
                m.setJMSCorrelationID("corr-" + n);
                p.send(m);
                System.out.println("{\"sent\":" + Drivers.q(args[i]) + ",\"message_id\":" + Drivers.q(m.getJMSMessageID()) + "}");
            }
        }
    }

    static void receive(String url, String source, int count) throws Exception {
        try (Connection c = new JmsConnectionFactory(url).createConnection()) {
            c.start();
            Session s = c.createSession(false, Session.AUTO_ACKNOWLEDGE);
            MessageConsumer consumer = s.createConsumer(s.createQueue(source));
            for (int got = 0; ; got++) {
                // Blocks until a message comes (the watchdog bounds it); then 500 ms for extras.
                Message m = got < count ? consumer.receive() : consumer.receive(500);
                if (m == null) break;
                String type, body;
                if (m instanceof BytesMessage) {
                    type = "bytes";
                    body = new String(m.getBody(byte[].class), StandardCharsets.UTF_8);
                } else if (m instanceof TextMessage t) {
                    type = "text";
                    body = t.getText();
                } else {
                    type = m.getClass().getSimpleName();
                    body = String.valueOf(m.getBody(Object.class));
                }
                StringBuilder props = new StringBuilder("{");
                for (Enumeration<?> names = m.getPropertyNames(); names.hasMoreElements(); ) {
                    String name = names.nextElement().toString();
                    if (props.length() > 1) props.append(',');
                    props.append(Drivers.q(name)).append(':').append(Drivers.q(String.valueOf(m.getObjectProperty(name))));
                }
                System.out.println("{\"type\":" + Drivers.q(type) + ",\"body\":" + Drivers.q(body) + ",\"message_id\":" + Drivers.q(m.getJMSMessageID())
                        + ",\"correlation_id\":" + Drivers.q(m.getJMSCorrelationID()) + ",\"properties\":" + props.append('}') + "}");
            }
        }
    }
}
