/**
 * What every driver of tests/java needs: JSON strings for its result lines and a watchdog.
 * Java 17's source launcher runs one file, so this class is compiled once by
 * scripts/java-clients/run and put on the drivers' classpath.
 */
public final class Drivers {
    private Drivers() {}

    /** A JSON string (or null). */
    public static String q(String s) {
        if (s == null) return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    /** Ends the process (exit 2) if it is still running after `ms`, whatever a client waits for. */
    public static void watchdog(String driver, long ms) {
        Thread t = new Thread(() -> {
            try {
                Thread.sleep(ms);
            } catch (InterruptedException e) {
                return;
            }
            System.err.println(driver + ": timed out after " + ms + " ms");
            System.out.flush();
            Runtime.getRuntime().halt(2);
        });
        t.setDaemon(true);
        t.start();
    }
}
