/** A stand-in for the service under test: it allocates and compresses, then waits. */
public class Service {
    public static void main(String[] args) throws Exception {
        Thread worker = new Thread(() -> {
            byte[] buf = new byte[32 * 1024];
            while (true) {
                java.util.zip.Deflater d = new java.util.zip.Deflater();
                d.setInput(buf);
                d.finish();
                d.deflate(new byte[64 * 1024]);
                d.end();
            }
        }, "worker");
        worker.setDaemon(true);
        worker.start();
        System.out.println("SERVICE UP");
        System.out.flush();
        Thread.sleep(Long.MAX_VALUE);
    }
}
