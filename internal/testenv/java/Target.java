import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.Deflater;

/**
 * A target JVM for safeattach's tests. Prints "READY <pid>" once started.
 * With argument N > 0 it runs N threads that churn native memory through
 * java.util.zip.Deflater (malloc-heavy, like a real service's compression
 * path) and counts their progress, printed on demand via the "progress"
 * system property read by tests through jcmd, and every second to stdout.
 */
public class Target {
    static final AtomicLong progress = new AtomicLong();

    public static void main(String[] args) throws Exception {
        int workers = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        for (int i = 0; i < workers; i++) {
            Thread t = new Thread(Target::churn, "churn-" + i);
            t.setDaemon(true);
            t.start();
        }
        System.out.println("READY " + ProcessHandle.current().pid());
        System.out.flush();
        while (true) {
            Thread.sleep(1000);
            System.setProperty("safeattach.progress", Long.toString(progress.get()));
        }
    }

    static void churn() {
        byte[] input = new byte[64 * 1024];
        for (int i = 0; i < input.length; i++) input[i] = (byte) (i * 31 % 251);
        byte[] output = new byte[128 * 1024];
        while (true) {
            Deflater d = new Deflater(1 + (int) (progress.get() % 9));
            d.setInput(input);
            d.finish();
            while (!d.finished()) d.deflate(output);
            d.end();
            progress.incrementAndGet();
        }
    }
}
