// Eclipse Paho Java (org.eclipse.paho.client.mqttv3, MQTT 3.1.1) publishing and subscribing
// through barnabas' MQTT listener, for tests/java_clients.rs.
//
//   PahoDriver.java publish   tcp://HOST:PORT CLIENT_ID [QOS TOPIC PAYLOAD]…
//   PahoDriver.java subscribe tcp://HOST:PORT CLIENT_ID FILTER QOS COUNT TIMEOUT_MS
//
// publish sends each message in turn (QoS 1 and 2 wait for PUBACK / PUBCOMP) and prints
// {"published","topic","qos"} for each. subscribe prints {"subscribed","granted"} once the
// SUBACK came, then {"topic","payload","qos","retained","duplicate"} per message; after COUNT
// messages it listens 500 ms more (anything extra is printed too) and exits. Exits 1 on any
// error, 2 on timeout.
import java.nio.charset.StandardCharsets;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import org.eclipse.paho.client.mqttv3.IMqttDeliveryToken;
import org.eclipse.paho.client.mqttv3.IMqttToken;
import org.eclipse.paho.client.mqttv3.MqttCallback;
import org.eclipse.paho.client.mqttv3.MqttClient;
import org.eclipse.paho.client.mqttv3.MqttConnectOptions;
import org.eclipse.paho.client.mqttv3.MqttMessage;
import org.eclipse.paho.client.mqttv3.persist.MemoryPersistence;

public class PahoDriver {
    public static void main(String[] args) {
        try {
            if (args.length >= 3 && args[0].equals("publish") && (args.length - 3) % 3 == 0) {
                Drivers.watchdog("PahoDriver", 60_000);
                publish(args);
            } else if (args.length == 7 && args[0].equals("subscribe")) {
                Drivers.watchdog("PahoDriver", Long.parseLong(args[6]));
                subscribe(args[1], args[2], args[3], Integer.parseInt(args[4]), Integer.parseInt(args[5]));
            } else {
                throw new IllegalArgumentException("usage: PahoDriver.java publish URL CLIENT_ID [QOS TOPIC PAYLOAD]… | "
                        + "subscribe URL CLIENT_ID FILTER QOS COUNT TIMEOUT_MS");
            }
            System.exit(0);
        } catch (Throwable e) {
            System.err.println("PahoDriver: " + e);
            e.printStackTrace();
            System.exit(1);
        }
    }

    static MqttClient connect(String url, String clientId, MqttCallback callback) throws Exception {
        MqttClient client = new MqttClient(url, clientId, new MemoryPersistence());
        if (callback != null) client.setCallback(callback);
        MqttConnectOptions opts = new MqttConnectOptions();
        opts.setMqttVersion(MqttConnectOptions.MQTT_VERSION_3_1_1);
        opts.setCleanSession(true);
        opts.setAutomaticReconnect(false);
        opts.setConnectionTimeout(10);
        client.connect(opts);
        return client;
    }

    static void publish(String[] args) throws Exception {
        MqttClient client = connect(args[1], args[2], null);
        for (int i = 3; i < args.length; i += 3) {
            int qos = Integer.parseInt(args[i]);
            MqttMessage m = new MqttMessage(args[i + 2].getBytes(StandardCharsets.UTF_8));
            m.setQos(qos);
            // Blocks until the QoS 1/2 handshake completed (or throws).
            client.publish(args[i + 1], m);
            System.out.println("{\"published\":" + Drivers.q(args[i + 2]) + ",\"topic\":" + Drivers.q(args[i + 1]) + ",\"qos\":" + qos + "}");
        }
        client.disconnect(5_000);
        client.close();
    }

    static void subscribe(String url, String clientId, String filter, int qos, int count) throws Exception {
        CountDownLatch all = new CountDownLatch(count);
        MqttClient client = connect(url, clientId, new MqttCallback() {
            public void connectionLost(Throwable cause) {
                System.err.println("PahoDriver: connection lost: " + cause);
                System.out.flush();
                Runtime.getRuntime().halt(1);
            }

            public void messageArrived(String topic, MqttMessage m) {
                synchronized (System.out) {
                    System.out.println("{\"topic\":" + Drivers.q(topic) + ",\"payload\":"
                            + Drivers.q(new String(m.getPayload(), StandardCharsets.UTF_8)) + ",\"qos\":" + m.getQos()
                            + ",\"retained\":" + m.isRetained() + ",\"duplicate\":" + m.isDuplicate() + "}");
                }
                all.countDown();
            }

            public void deliveryComplete(IMqttDeliveryToken token) {}
        });
        IMqttToken sub = client.subscribeWithResponse(new String[] {filter}, new int[] {qos});
        sub.waitForCompletion(10_000);
        System.out.println("{\"subscribed\":" + Drivers.q(filter) + ",\"granted\":" + sub.getGrantedQos()[0] + "}");
        all.await();
        // Anything beyond COUNT (a duplicate, an extra record) is printed in this time.
        TimeUnit.MILLISECONDS.sleep(500);
        client.disconnect(5_000);
        client.close();
    }
}
