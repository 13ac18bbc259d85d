import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.Deflater;

/**
 * A target JVM for safeattach's tests. Prints "READY <pid>" once started.
 * With argument N > 0 it runs N threads that churn native memory through
 * java.util.zip.Deflater (malloc-heavy, like a real service's compression
 * path) and counts their progress, printed on demand via the "progress"
 * system property read by tests through jcmd, and every second to stdout.
 * A second argument picks what the N threads do instead: "wait" parks
 * them all in Object.wait (a JVM with nothing to do), "gc" makes them
 * allocate and call System.gc() without pause (a JVM in long, back to
 * back full collections), "spin" keeps them computing in Java code (what
 * a Java method sampler such as JFR's sees), "contend" makes them compute
 * and allocate while taking turns on one monitor (CPU, allocation and
 * lock samples all at once, for a profiler's recording).
 */
public class Target {
    static final AtomicLong progress = new AtomicLong();

    public static void main(String[] args) throws Exception {
        int workers = args.length > 0 ? Integer.parseInt(args[0]) : 0;
        String mode = args.length > 1 ? args[1] : "churn";
        Runnable work = Target::churn;
        if (mode.equals("wait")) work = Target::park;
        if (mode.equals("gc")) work = Target::collect;
        if (mode.equals("spin")) work = Target::spin;
        if (mode.equals("contend")) work = Target::contend;
        for (int i = 0; i < workers; i++) {
            Thread t = new Thread(work, mode + "-" + i);
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

    static final Object lock = new Object();

    static void park() {
        synchronized (lock) {
            while (true) {
                try {
                    lock.wait();
                } catch (InterruptedException e) {
                    return;
                }
            }
        }
    }

    static volatile Object[] retained;

    static void collect() {
        while (true) {
            Object[] keep = new Object[4096];
            for (int i = 0; i < keep.length; i++) keep[i] = new byte[1024];
            retained = keep;
            System.gc();
            progress.incrementAndGet();
        }
    }

    static volatile long sink;

    static void spin() {
        long h = 1;
        while (true) {
            for (int i = 0; i < 1_000_000; i++) h = h * 31 + i;
            sink = h;
            progress.incrementAndGet();
        }
    }

    static void contend() {
        long h = 1;
        while (true) {
            synchronized (lock) {
                for (int i = 0; i < 200_000; i++) h = h * 31 + i;
                retained = new Object[] {new byte[16 * 1024 + (int) (h & 1023)]};
                sink = h;
            }
            progress.incrementAndGet();
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
