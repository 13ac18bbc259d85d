package testenv

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// StartContainerJVM starts a JVM the way a container runs one: in its own
// pid and mount namespaces, behind a shell entrypoint that first runs
// setup (mounts: "mount -t tmpfs tmpfs /tmp"). It returns the pid of the
// wrapper (unshare) and of the JVM as the host sees them. The classes
// live in /var/cache, which such set-ups leave alone.
func StartContainerJVM(t testing.TB, setup string) (wrapper, jvm int) {
	t.Helper()
	return StartContainerJVMWorkers(t, setup, 0)
}

// StartContainerJVMWorkers is StartContainerJVM with busy worker threads
// (Target's churn), for tests that need samples.
func StartContainerJVMWorkers(t testing.TB, setup string, workers int) (wrapper, jvm int) {
	t.Helper()
	RequireRoot(t)
	unshare := LookPath(t, "unshare")
	jdk := JDK17(t)
	dir, err := os.MkdirTemp("/var/cache", "safeattach-container-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	class, err := os.ReadFile(filepath.Join(TargetClasspath(t, jdk), "Target.class"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "Target.class"), class, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(unshare, "--pid", "--mount", "--fork", "--propagation", "private", "sh", "-c",
		setup+" && "+filepath.Join(jdk.Home, "bin/java")+" -Xmx64m -XX:+UseSerialGC -cp "+dir+" Target "+strconv.Itoa(workers))
	cmd.Dir = dir
	p := Start(t, cmd)
	p.WaitOutput(t, "READY", 60*time.Second)
	if jvm := descendantRunning(p, 10*time.Second, isJava); jvm != 0 {
		return p.PID, jvm
	}
	t.Fatal("no java under the container's entrypoint")
	return 0, 0
}

func isJava(exe string) bool { return strings.HasSuffix(exe, "/java") }

// descendantRunning waits, at most wait and while p runs, for a process
// under p whose executable matches, and returns its pid (0 if none came).
func descendantRunning(p *Process, wait time.Duration, match func(exe string) bool) int {
	for deadline := time.Now().Add(wait); time.Now().Before(deadline) && p.Alive(); time.Sleep(5 * time.Millisecond) {
		for _, d := range descendants(p.PID) {
			if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", d)); match(exe) {
				return d
			}
		}
	}
	return 0
}

func descendants(pid int) []int {
	var out []int
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	for _, f := range strings.Fields(string(data)) {
		c, _ := strconv.Atoi(f)
		out = append(out, c)
		out = append(out, descendants(c)...)
	}
	return out
}

// KubeletCgroup creates a cgroup directory named as kubelet and its
// runtime name it (rel, under the v1 hierarchy mounted at
// /sys/fs/cgroup/<hierarchy>), moves the pids into it, and at cleanup
// moves them back and removes every level it created.
func KubeletCgroup(t testing.TB, hierarchy, rel string, pids ...int) {
	t.Helper()
	root := filepath.Join("/sys/fs/cgroup", hierarchy)
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		Missing(t, "cgroup %s: %v", dir, err)
	}
	t.Cleanup(func() {
		for _, pid := range pids {
			os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
		}
		for d := dir; d != root && d != "/"; d = filepath.Dir(d) {
			for i := 0; i < 50; i++ {
				if err := os.Remove(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	for _, pid := range pids {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			t.Fatalf("move %d into %s: %v", pid, dir, err)
		}
	}
}

// PodSpec describes a JVM started as a Kubernetes pod runs one.
type PodSpec struct {
	// JDK is the JDK to run (default: JDK17).
	JDK JDK
	// User is the uid (and gid) the JVM runs as; 0 means nobody (65534),
	// the least trusted user of a node.
	User uint32
	// Env is added to the JVM's environment (JAVA_TOOL_OPTIONS=...).
	Env []string
	// Setup runs as root inside the pod's root before the JVM starts
	// (e.g. "mount -o remount,noexec /tmp").
	Setup string
	// Workers are busy threads (Target's churn), for samples; Mode is
	// what they do instead (spin: Java code, what the Flight Recorder's
	// sampler sees; see Target.java).
	Workers int
	Mode    string
	// JVMArgs go before the main class.
	JVMArgs []string
	// NetNS gives the pod a network namespace of its own (as a real pod
	// has): abstract unix sockets are per network namespace.
	NetNS bool
	// NoWait returns as soon as the JVM process exists, without waiting
	// for READY (for tests that act while it starts).
	NoWait bool
}

// Pod is a JVM in its own pid and mount namespaces, pivoted into a root
// of its own: /usr and /etc are the host's, read-only; /tmp, /var/tmp and
// /dev/shm are private tmpfs mounts. Paths the host sees under
// /proc/<PID>/root are the pod's; a symlink the pod's user makes there
// points into the pod, as in a real container.
type Pod struct {
	// Wrapper is the pod's pid 1 as the host sees it (its sandbox), PID
	// the JVM's host pid.
	Wrapper, PID int
	// UID is the JVM's user.
	UID  uint32
	Proc *Process
}

// StartPod starts a JVM as a pod (root required) and waits until it
// prints READY (with NoWait, until the java process exists). Cleanup
// kills it with its namespaces.
func StartPod(t testing.TB, spec PodSpec) *Pod {
	t.Helper()
	RequireRoot(t)
	unshare := LookPath(t, "unshare")
	if spec.JDK.Home == "" {
		spec.JDK = JDK17(t)
	}
	if spec.User == 0 {
		spec.User = 65534
	}
	base, err := os.MkdirTemp("/var/cache", "safeattach-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	app, root := filepath.Join(base, "app"), filepath.Join(base, "root")
	for _, d := range []string{app, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	class, err := os.ReadFile(filepath.Join(TargetClasspath(t, spec.JDK), "Target.class"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(app, "Target.class"), class, 0o644); err != nil {
		t.Fatal(err)
	}
	java := []string{filepath.Join(spec.JDK.Home, "bin/java"), "-Xmx64m", "-XX:+UseSerialGC"}
	java = append(java, spec.JVMArgs...)
	java = append(java, "-cp", "/app", "Target", strconv.Itoa(spec.Workers))
	if spec.Mode != "" {
		java = append(java, spec.Mode)
	}
	env := append([]string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/tmp", "LANG=C.UTF-8"}, spec.Env...)
	script := `set -e
PATH=/usr/sbin:/usr/bin:/sbin:/bin
R=` + shellQuote(root) + `
mount -t tmpfs -o mode=0755 pod-root "$R"
for d in usr etc bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$d" ]; then cp -P "/$d" "$R/$d"
  elif [ -d "/$d" ]; then mkdir "$R/$d"; mount --rbind "/$d" "$R/$d"; mount -o remount,bind,ro "$R/$d"; fi
done
mkdir -p "$R/tmp" "$R/var/tmp" "$R/dev" "$R/proc" "$R/app"
mount -t tmpfs -o mode=1777 pod-tmp "$R/tmp"
mount -t tmpfs -o mode=1777 pod-var-tmp "$R/var/tmp"
mount --rbind /dev "$R/dev"
mount -t tmpfs -o mode=1777 pod-shm "$R/dev/shm"
mount -t proc proc "$R/proc"
mount --bind ` + shellQuote(app) + ` "$R/app"
mount -o remount,bind,ro "$R/app"
cd "$R"
` + spec.Setup + `
# pivot_root, as container runtimes do (a chroot would leave the mount
# namespace's root outside: the host would see the pod's files under
# host paths in its maps).
mkdir "$R/.old"
pivot_root "$R" "$R/.old"
cd /
umount -l /.old
rmdir /.old
exec /usr/bin/env -i ` + shellJoin(env) + ` /usr/bin/setpriv --reuid=` + strconv.Itoa(int(spec.User)) + ` --regid=` + strconv.Itoa(int(spec.User)) + ` --clear-groups /bin/sh -c 'cd /tmp && exec "$@"' sh ` + shellJoin(java)
	args := []string{"--pid", "--mount", "--fork", "--propagation", "private"}
	if spec.NetNS {
		args = append(args, "--net")
	}
	cmd := exec.Command(unshare, append(args, "/bin/sh", "-c", script)...)
	p := Start(t, cmd)
	wait := 10 * time.Second
	if spec.NoWait {
		wait = 60 * time.Second
	} else {
		p.WaitOutput(t, "READY", 60*time.Second)
	}
	if jvm := descendantRunning(p, wait, isJava); jvm != 0 {
		return &Pod{Wrapper: p.PID, PID: jvm, UID: spec.User, Proc: p}
	}
	t.Fatalf("no java in the pod: %s", p.Output())
	return nil
}

// Exec runs script with sh inside the pod's namespaces and root, as uid
// (and gid) — the pod's own user is the attacker of most tests — and
// returns its combined output; a failure fails the test.
func (p *Pod) Exec(t testing.TB, uid uint32, script string) string {
	t.Helper()
	out, err := p.Command(uid, script).CombinedOutput()
	if err != nil {
		t.Fatalf("in pod %d as uid %d: %s: %v\n%s", p.PID, uid, script, err, out)
	}
	return string(out)
}

// CommandNoCaps is Command with every capability dropped (bounding and
// inheritable sets emptied before sh starts): uid 0 is then what a
// container's root is without a user namespace and with the default
// capabilities dropped — the pod's uid 0 attacker.
func (p *Pod) CommandNoCaps(uid uint32, script string) *exec.Cmd {
	return p.Command(uid, "exec /usr/bin/setpriv --bounding-set=-all --inh-caps=-all /bin/sh -c "+shellQuote(script))
}

// Command is the command Exec runs, for tests that start it themselves.
func (p *Pod) Command(uid uint32, script string) *exec.Cmd {
	u := strconv.Itoa(int(uid))
	return exec.Command("nsenter", "-t", strconv.Itoa(p.PID), "-m", "-p", "-r", "-w", "-S", u, "-G", u, "/bin/sh", "-c", script)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = shellQuote(a)
	}
	return strings.Join(q, " ")
}

// MemCgroup is a memory cgroup with a limit, made for one test: what a
// pod's resources.limits.memory gives its containers.
type MemCgroup struct {
	Dir string
	v2  bool
}

// NewMemCgroup creates a memory cgroup limited to limit bytes (cgroup v1's
// memory hierarchy, or v2 where that has the memory controller) and
// removes it at cleanup, after the test's processes were killed.
func NewMemCgroup(t testing.TB, limit int64) *MemCgroup {
	t.Helper()
	RequireRoot(t)
	name := fmt.Sprintf("safeattach-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	m := &MemCgroup{}
	if fi, err := os.Stat("/sys/fs/cgroup/memory/memory.limit_in_bytes"); err == nil && fi.Mode().IsRegular() {
		m.Dir = filepath.Join("/sys/fs/cgroup/memory", name)
	} else if ctl, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil && strings.Contains(string(ctl), "memory") {
		m.Dir, m.v2 = filepath.Join("/sys/fs/cgroup", name), true
	} else {
		Missing(t, "no memory cgroup controller to limit a process with")
	}
	if err := os.Mkdir(m.Dir, 0o755); err != nil {
		Missing(t, "memory cgroup: %v", err)
	}
	t.Cleanup(func() {
		for i := 0; i < 100; i++ {
			if err := os.Remove(m.Dir); err == nil || os.IsNotExist(err) {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	file, value := "memory.limit_in_bytes", strconv.FormatInt(limit, 10)
	if m.v2 {
		file = "memory.max"
	}
	if err := os.WriteFile(filepath.Join(m.Dir, file), []byte(value), 0o644); err != nil {
		t.Fatalf("limit %s: %v", m.Dir, err)
	}
	if !m.v2 {
		// No swap to escape into: over the limit is the OOM killer.
		os.WriteFile(filepath.Join(m.Dir, "memory.memsw.limit_in_bytes"), []byte(value), 0o644)
	}
	return m
}

// Wrap makes cmd enter the cgroup before it execs: a shell writes its own
// pid into cgroup.procs and then becomes cmd, so cmd never runs outside.
func (m *MemCgroup) Wrap(cmd *exec.Cmd) {
	args := append([]string{"/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, filepath.Join(m.Dir, "cgroup.procs"), cmd.Path}, cmd.Args[1:]...)
	cmd.Path, cmd.Args = "/bin/sh", args
}

// Peak is the most memory the cgroup's processes used at once.
func (m *MemCgroup) Peak() int64 {
	file := "memory.max_usage_in_bytes"
	if m.v2 {
		file = "memory.peak"
	}
	data, _ := os.ReadFile(filepath.Join(m.Dir, file))
	v, _ := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
	return v
}

// OOMKills counts the processes the kernel killed for the limit.
func (m *MemCgroup) OOMKills() int {
	file := "memory.oom_control"
	if m.v2 {
		file = "memory.events"
	}
	data, _ := os.ReadFile(filepath.Join(m.Dir, file))
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "oom_kill "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	return 0
}

// RunInMemoryCgroup runs cmd to its end inside a fresh memory cgroup of
// limit bytes and returns its combined output.
func RunInMemoryCgroup(t testing.TB, cmd *exec.Cmd, limit int64) (string, error) {
	t.Helper()
	m := NewMemCgroup(t, limit)
	m.Wrap(cmd)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// StartWaybackAttacker starts attackers/wayback.c inside the pod as its
// own user, with modes ("sparse", "log", "escapes"; none for sparse and
// log), and returns once it watches the pod's /tmp. The test's cleanup
// kills it.
func (p *Pod) StartWaybackAttacker(t testing.TB, modes ...string) *Process {
	t.Helper()
	return p.StartWaybackAttackerAs(t, p.UID, modes...)
}

// WaybackEscapes is what the attacker's escapes mode appends.
const WaybackEscapes = "[ERROR] \x1b]52;c;cm0gLXJmIH4K\x07\x1b]0;owned\x07\x1b[31mred\x1b[0m\u009b2J\n"

// WaybackEscaped is how WaybackEscapes's clipboard write reads once
// escaped (internal/printable).
const WaybackEscaped = `\x1b]52;c;cm0gLXJmIH4K\x07`

// HasControl reports whether s holds a byte a terminal would act on: a
// C0 control other than newline and tab, DEL, or the first byte of a C1
// control in UTF-8 (0xc2 0x80–0x9f).
func HasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 && c != '\n' && c != '\t' || c == 0x7f || c == 0xc2 && i+1 < len(s) && s[i+1] <= 0x9f {
			return true
		}
	}
	return false
}

// EachWaybackAttacker runs fn in a parallel subtest for each user the
// wayback attacker can be in a pod — its root and nobody, the JVM's own
// user — on a pod of its own, with the attacker started in modes.
func EachWaybackAttacker(t *testing.T, fn func(t *testing.T, pod *Pod), modes ...string) {
	for _, attacker := range []struct {
		name string
		uid  uint32
	}{{"root", 0}, {"nobody", 65534}} {
		t.Run(attacker.name, func(t *testing.T) {
			t.Parallel()
			pod := StartPod(t, PodSpec{})
			pod.StartWaybackAttackerAs(t, attacker.uid, modes...)
			fn(t, pod)
		})
	}
}

// StartWaybackAttackerAs is StartWaybackAttacker as uid inside the pod:
// the pod's root is as much the pod's as the JVM's user.
func (p *Pod) StartWaybackAttackerAs(t testing.TB, uid uint32, modes ...string) *Process {
	t.Helper()
	src, err := sources.ReadFile("attackers/wayback.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := BuildC(t, "wayback", string(src))
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// Into the pod's own /tmp, which only the pod sees.
	inPod := fmt.Sprintf("/proc/%d/root/tmp/wayback", p.PID)
	if err := os.WriteFile(inPod, data, 0o755); err != nil {
		t.Fatal(err)
	}
	a := Start(t, p.Command(uid, "exec /tmp/wayback "+strings.Join(modes, " ")))
	a.WaitOutput(t, "WATCHING", 10*time.Second)
	return a
}

// FdTransferClient is attackers/fdtclient.c in a pod: a hostile agent of
// async-profiler's descriptor protocol, run as the pod's uid with every
// capability dropped (a uid 0 without a user namespace, as most images
// run). HostPID is its pid as the host sees it: the process a
// descriptor server must be listening for.
type FdTransferClient struct {
	*Process
	HostPID int
	in      io.WriteCloser
}

// StartFdTransferClient starts the client with args (its mode) and
// returns once it runs; it connects when Connect gives it the socket.
func (p *Pod) StartFdTransferClient(t testing.TB, uid uint32, args ...string) *FdTransferClient {
	t.Helper()
	src, err := sources.ReadFile("attackers/fdtclient.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := BuildC(t, "fdtclient", string(src), "-pthread")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	// A name of its own: clients of one pod run at once, and a binary
	// being run cannot be written again.
	f, err := os.CreateTemp(fmt.Sprintf("/proc/%d/root/tmp", p.PID), "fdtclient-")
	if err == nil {
		_, err = f.Write(data)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	cmd := p.CommandNoCaps(uid, "exec /tmp/"+filepath.Base(f.Name())+" "+shellJoin(args))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	c := &FdTransferClient{Process: Start(t, cmd), in: in}
	c.HostPID = descendantRunning(c.Process, 10*time.Second, func(exe string) bool {
		return strings.HasPrefix(filepath.Base(exe), "fdtclient-")
	})
	if c.HostPID == 0 {
		t.Fatalf("fdtclient did not start in pod %d: %s", p.PID, c.Output())
	}
	return c
}

// Connect gives the client the server's socket name.
func (c *FdTransferClient) Connect(t testing.TB, name string) {
	t.Helper()
	if _, err := io.WriteString(c.in, name+"\n"); err != nil {
		t.Fatal(err)
	}
}

// Results waits for the client's DONE and returns its key=value lines.
func (c *FdTransferClient) Results(t testing.TB, timeout time.Duration) map[string]string {
	t.Helper()
	c.WaitOutput(t, "DONE", timeout)
	out := map[string]string{}
	for _, line := range strings.Split(c.Output(), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
			out[k] = v
		}
	}
	return out
}

// Release lets the client exit, closing every descriptor it was given.
func (c *FdTransferClient) Release() { c.in.Close() }

// BuildWaybackAttacker compiles attackers/wayback.c statically, for an
// image of its own (a real container has none of the host's libraries).
func BuildWaybackAttacker(t testing.TB) string {
	t.Helper()
	src, err := sources.ReadFile("attackers/wayback.c")
	if err != nil {
		t.Fatal(err)
	}
	return BuildC(t, "wayback-static", string(src), "-static")
}
