import java.net.StandardProtocolFamily;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;

/**
 * A JVM whose own code takes over its attach socket (what a pod's user
 * can do to its JVM): it removes /tmp/.java_pid<pid>, listens there
 * itself with the JVM's credentials, and answers every command with
 * status 0 and then, by mode:
 *   flood  endless bytes, never closing;
 *   forge  Flight Recorder answers that say a recording of safeattach's
 *          runs, with terminal escapes and forged lines after it.
 * Prints "READY <pid>" once it listens.
 */
public class AttachImpostor {
    public static void main(String[] args) throws Exception {
        String mode = args.length > 0 ? args[0] : "flood";
        long pid = ProcessHandle.current().pid();
        Path path = Path.of("/tmp/.java_pid" + pid);
        Files.deleteIfExists(path);
        ServerSocketChannel server = ServerSocketChannel.open(StandardProtocolFamily.UNIX);
        server.bind(UnixDomainSocketAddress.of(path));
        Files.setPosixFilePermissions(path, PosixFilePermissions.fromString("rw-------"));
        System.out.println("READY " + pid);
        System.out.flush();
        while (true) {
            SocketChannel c = server.accept();
            Thread t = new Thread(() -> answer(c, mode));
            t.setDaemon(true);
            t.start();
        }
    }

    static void answer(SocketChannel c, String mode) {
        try (c) {
            ByteBuffer in = ByteBuffer.allocate(8192);
            c.read(in);
            String request = new String(in.array(), 0, in.position(), StandardCharsets.UTF_8).replace('\0', ' ');
            c.write(ByteBuffer.wrap("0\n".getBytes(StandardCharsets.UTF_8)));
            if (mode.equals("flood")) {
                ByteBuffer block = ByteBuffer.allocateDirect(1 << 20);
                while (block.hasRemaining()) block.put((byte) 'x');
                while (true) {
                    block.rewind();
                    c.write(block);
                }
            }
            String answer = "OpenJDK 64-Bit Server VM version 17\n";
            if (request.contains("JFR.start")) {
                answer = "Started recording 1.\n";
            } else if (request.contains("JFR.check")) {
                answer = "Recording 1: name=safeattach-0123\u001b]0;owned\u0007 maxsize=1.0GB (running)\n"
                    + "[ERROR] forged line\n\u001b]52;c;cm0gLXJmIH4K\u0007\u001b]0;owned\u0007\n";
            } else if (request.contains("JFR.stop")) {
                answer = "Stopped recording 1.\n";
            }
            c.write(ByteBuffer.wrap(answer.getBytes(StandardCharsets.UTF_8)));
        } catch (Exception e) {
            // the client went away: nothing to answer
        }
    }
}
