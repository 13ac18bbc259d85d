package main

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/spf13/pflag"

	"github.com/safeattach/safeattach/internal/testenv"
	"github.com/safeattach/safeattach/profiling/asprof"
)

// TestProfileActionsAcrossProcesses: start, status, dump and stop are
// four separate safeattach processes; the profiler keeps its state in the
// JVM between them, and every agent message reaches the caller.
func TestProfileActionsAcrossProcesses(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildCLI(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	run := func(args ...string) (string, string) {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"profile"}, args...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errb.String())
		}
		return out.String(), errb.String()
	}
	if _, stderr := run("start", "--agent", lib, "-e", "wall", pid); !strings.Contains(stderr, "Profiling started") {
		t.Errorf("start: %q", stderr)
	}
	if stdout, _ := run("status", "--agent", lib, pid); !strings.Contains(stdout, "Profiling is running") {
		t.Errorf("status: %q", stdout)
	}
	if stdout, _ := run("list", "--agent", lib, pid); !strings.Contains(stdout, "itimer") {
		t.Errorf("list: %q", stdout)
	}
	dump := filepath.Join(dir, "dump.collapsed")
	run("dump", "--agent", lib, "-f", dump, pid)
	if data, _ := os.ReadFile(dump); !strings.Contains(string(data), "[wall]") {
		t.Errorf("dump: %q", data)
	}
	stop := filepath.Join(dir, "stop.collapsed")
	run("stop", "--agent", lib, "-f", stop, pid)
	if data, _ := os.ReadFile(stop); !strings.Contains(string(data), "Target.churn") {
		t.Errorf("stop: %q", data)
	}
	if stdout, _ := run("status", "--agent", lib, pid); !strings.Contains(stdout, "Profiler is not active") {
		t.Errorf("status after stop: %q", stdout)
	}
	// Stopping a profiler that is not running: the agent's reason, exit 3.
	cmd := exec.Command(bin, "profile", "stop", "--agent", lib, "-f", stop, pid)
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitFailed || !strings.Contains(string(out), "Profiler is not active") {
		t.Errorf("stop when not active: exit %d %q", cmd.ProcessState.ExitCode(), out)
	}
}

// TestProfileLoop: --loop 2s for -d 10s gives five window files named by
// %n.
func TestProfileLoop(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	dir := t.TempDir()
	_, stderr, code := runCLI(t, "profile", "--agent", lib, "--loop", "2s", "-d", "10s", "-f", filepath.Join(dir, "w-%n.collapsed"), fmt.Sprint(p.PID))
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "w-*.collapsed"))
	if len(files) != 5 {
		t.Errorf("want 5 windows, have %v\n%s", files, stderr)
	}
	for _, f := range files {
		if data, _ := os.ReadFile(f); !strings.Contains(string(data), "Target.churn") {
			t.Errorf("%s: %q", f, data)
		}
	}
}

// TestAsprofFlags: asprof's command line, as the profile command takes
// it, reaches the agent as asprof's launcher passes it.
func TestAsprofFlags(t *testing.T) {
	var o asprof.Options
	var features string
	f := pflag.NewFlagSet("profile", pflag.ContinueOnError)
	asprofFlags(f, &o, &features)
	args := []string{"-e", "wall", "-i", "5ms", "-j", "50/20", "-t", "-s", "-n", "-g", "-a", "-l", "-I", "*Foo*", "-X", "*Bar*", "-L", "warn",
		"-F", "vtable,comptask", "--title", "a<b>,c", "--minwidth", "0.5", "--reverse", "--inverted", "--total",
		"--alloc", "512k", "--live", "--lock", "10us", "--cstack", "dwarf", "--all-user", "--jfrsync", "profile"}
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	o.Features = splitFeatures(features)
	p, err := o.Profiling()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := o.Output()
	if want := "event=wall,interval=5ms,jstackdepth=50/20,threads,alloc=512k,lock=10us,cstack=dwarf,live,alluser,jfrsync=profile"; p != want {
		t.Errorf("profiling\n got  %s\n want %s", p, want)
	}
	if want := "simple,norm,sig,ann,lib,include=*Foo*,exclude=*Bar*,loglevel=warn,features=vtable+comptask,title=a&lt;b&gt;&#44;c,minwidth=0.5,reverse,inverted,total"; out != want {
		t.Errorf("output\n got  %s\n want %s", out, want)
	}
}

// TestTargetByContainerAndPod: a namespaced JVM behind a shell
// entrypoint, in a cgroup named as kubelet with containerd names it, is
// profiled as container:<id> and pod-uid:<uid>, and scan shows its
// container and pod.
func TestTargetByContainerAndPod(t *testing.T) {
	t.Parallel()
	pod, id := "6e0c2b1a-3f4d-4e5f-8a9b-000000000003", strings.Repeat("c4", 32)
	wrapper, jvm := testenv.StartContainerJVM(t, "mount -t tmpfs tmpfs /tmp")
	testenv.KubeletCgroup(t, "systemd", "kubepods.slice/kubepods-pod"+strings.ReplaceAll(pod, "-", "_")+".slice/cri-containerd-"+id+".scope", wrapper, jvm)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	out := filepath.Join(t.TempDir(), "p.collapsed")
	for _, target := range [][]string{{"container:containerd://" + id[:12]}, {"pod-uid:" + pod}, {"--container", id}, {"--pod-uid", pod}} {
		if _, stderr, code := runCLI(t, append([]string{"profile", "--agent", lib, "-d", "1", "-f", out}, target...)...); code != exitOK {
			t.Errorf("%s: exit %d %s", target, code, stderr)
		}
	}
	if _, stderr, code := runCLI(t, "check", "--container", id, "--pod-uid", pod); code != exitError || !strings.Contains(stderr, "give one") {
		t.Errorf("two target flags: exit %d %s", code, stderr)
	}

	// pod:NAMESPACE/NAME through a kubeconfig and a loopback API server:
	// the pod on this node resolves to the JVM, one on another node is an
	// error that names that node.
	host, _ := os.Hostname()
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		node := map[string]string{"/api/v1/namespaces/shop/pods/orders": host, "/api/v1/namespaces/shop/pods/remote": "node-elsewhere"}[r.URL.Path]
		w.Header().Set("Content-Type", "application/json")
		if node == "" || r.Header.Get("Authorization") != "Bearer t0ken" {
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}`)
			return
		}
		fmt.Fprintf(w, `{"kind":"Pod","apiVersion":"v1","metadata":{"namespace":"shop","name":"x","uid":%q},"spec":{"nodeName":%q},"status":{"phase":"Running","containerStatuses":[{"name":"app","containerID":"containerd://%s","state":{"running":{}}}]}}`, pod, node, id)
	}))
	defer api.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	ca := base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))
	os.WriteFile(kubeconfig, []byte("current-context: c\ncontexts: [{name: c, context: {cluster: k, user: u}}]\n"+
		"clusters: [{name: k, cluster: {server: '"+api.URL+"', certificate-authority-data: "+ca+"}}]\nusers: [{name: u, user: {token: t0ken}}]\n"), 0o600)
	for ref, want := range map[string]string{"pod:shop/orders/app": "", "pod:shop/remote": "runs on node node-elsewhere"} {
		cmd := exec.Command(testenv.BuildCLI(t), "profile", "--agent", lib, "-d", "1", "-f", out, ref)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "KUBERNETES_SERVICE_HOST=", "NODE_NAME=")
		got, err := cmd.CombinedOutput()
		if want == "" && err != nil {
			t.Errorf("%s: %v\n%s", ref, err, got)
		}
		if want != "" && (err == nil || !strings.Contains(string(got), want)) {
			t.Errorf("%s: %v %s, want %q", ref, err, got, want)
		}
	}

	// --fallback under a pod: target: the pod's JVM, refused
	// async-profiler by the operator's deny list, is recorded by its own
	// Flight Recorder.
	rec := filepath.Join(t.TempDir(), "pod.jfr")
	cmd := exec.Command(testenv.BuildCLI(t), "profile", "--agent", lib, "--deny-agent", lib, "--fallback", "jfr", "-d", "1", "-f", rec, "pod:shop/orders/app")
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "KUBERNETES_SERVICE_HOST=", "NODE_NAME=")
	if got, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(got), "refused by agent-denylisted") {
		t.Errorf("--fallback jfr pod:shop/orders/app: %v\n%s", err, got)
	} else if data, _ := os.ReadFile(rec); len(data) < 4 || string(data[:4]) != "FLR\x00" {
		t.Errorf("%s is not a recording (%d bytes)", rec, len(data))
	}

	stdout, _, _ := runCLI(t, "scan", "--json")
	if !strings.Contains(stdout, `"container_id": "`+id+`"`) || !strings.Contains(stdout, `"pod_uid": "`+pod+`"`) || !strings.Contains(stdout, fmt.Sprintf(`"pid": %d`, jvm)) {
		t.Errorf("scan does not show the JVM's container and pod:\n%.2000s", stdout)
	}
}

// TestScanFindsUnreadableJVMsByHsperfdata: run as nobody, scan cannot
// read a root JVM's maps, but knows it is a JVM from its hsperfdata file.
func TestScanFindsUnreadableJVMsByHsperfdata(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{JVMArgs: []string{"-XX:+UsePerfData"}})
	cmd := exec.Command(testenv.BuildCLI(t), "scan", "--json")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("scan as nobody: %v\n%s", err, out)
	}
	var res struct {
		Unreadable []struct {
			PID int  `json:"pid"`
			JVM bool `json:"jvm"`
		} `json:"unreadable"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	for _, u := range res.Unreadable {
		if u.PID == p.PID && u.JVM {
			return
		}
	}
	t.Errorf("JVM %d not reported as an unreadable JVM: %+v", p.PID, res.Unreadable)
}

// TestOnlyTheRealCause: a user who is neither root nor the
// JVM's is refused by credentials-mismatch alone. What the inspection
// could not read (the JVM's memory map and root, so its kind and what it
// could load) is counted, not listed as further causes; the JSON keeps
// every finding, undetermined ones marked. Exit 2, nothing sent.
func TestOnlyTheRealCause(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	agent := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	// nobody must be able to read the agent to judge it (t.TempDir is
	// private to root).
	dir, err := os.MkdirTemp("", "safeattach-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	readable := filepath.Join(dir, "agent.so")
	data, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(readable, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(args ...string) (string, string, int) {
		cmd := exec.Command(testenv.BuildCLI(t), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out.String(), errb.String(), code
	}
	for _, args := range [][]string{
		{"load", fmt.Sprint(p.PID), readable},
		{"profile", "--agent", readable, "-d", "1", fmt.Sprint(p.PID)},
		{"check", "--agent", readable, fmt.Sprint(p.PID)},
	} {
		stdout, stderr, code := asNobody(args...)
		all := stdout + stderr
		if code != exitRefused || !strings.Contains(stderr, "refused by credentials-mismatch\n") && !strings.Contains(stderr, "refused by credentials-mismatch;") {
			t.Errorf("%s: exit %d\n%s", args[0], code, all)
		}
		for _, noise := range []string{"not-a-jvm", "agent-not-loadable", "openj9"} {
			if strings.Contains(all, noise) {
				t.Errorf("%s names %s beside the real cause:\n%s", args[0], noise, all)
			}
		}
		if !strings.Contains(all, "more could not be determined") {
			t.Errorf("%s does not count what it could not read:\n%s", args[0], all)
		}
	}
	stdout, _, code := asNobody("check", "--json", "--agent", readable, fmt.Sprint(p.PID))
	var out struct {
		Findings []struct {
			Rule         string
			Severity     string
			Undetermined bool
		}
	}
	if err := json.Unmarshal([]byte(stdout), &out); err != nil || code != exitRefused {
		t.Fatalf("check --json: exit %d %v\n%s", code, err, stdout)
	}
	found := map[string]bool{}
	for _, f := range out.Findings {
		found[f.Rule] = true
		if f.Rule == "not-a-jvm" && (f.Severity != "block" || !f.Undetermined) {
			t.Errorf("not-a-jvm on an unreadable map must block, marked undetermined: %+v", f)
		}
		if f.Rule == "credentials-mismatch" && f.Undetermined {
			t.Errorf("credentials-mismatch is decided: %+v", f)
		}
	}
	if !found["not-a-jvm"] || !found["credentials-mismatch"] {
		t.Errorf("--json must keep every finding: %+v", out.Findings)
	}
}

// TestRepeatedProfileIsQuiet: a second profile of a JVM that maps the
// agent since the first says nothing of it ("[info]
// profiler-already-loaded" closed every repeat); check still does.
func TestRepeatedProfileIsQuiet(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	for i := range 2 {
		_, stderr, code := cli(t, nil, "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-f", filepath.Join(dir, fmt.Sprintf("%d.collapsed", i)), pid)
		if code != 0 || strings.Contains(stderr, "[info]") {
			t.Errorf("profile %d: exit %d\n%s", i, code, stderr)
		}
	}
	if stdout, _, _ := cli(t, nil, "check", "--agent", lib, pid); !strings.Contains(stdout, "profiler-already-loaded") {
		t.Errorf("check no longer says the profiler is loaded:\n%s", stdout)
	}
}

// TestAgentMessagesComeFirst: with standard output and error read
// together, the agent's messages come before the profile, as asprof's
// do (they came after it).
func TestAgentMessagesComeFirst(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	cmd := exec.Command(testenv.BuildCLI(t), "profile", "--agent", lib, "-e", "itimer", "-d", "1", "-o", "collapsed", fmt.Sprint(p.PID))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	started, sample := strings.Index(string(out), "Profiling started"), strings.Index(string(out), "[itimer]")
	if started < 0 || sample < 0 || started > sample {
		t.Errorf("the agent's message at %d, the profile at %d:\n%s", started, sample, out)
	}
}

// TestJFRDumpWritesTheRecordingSoFar: dump during a JFR recording writes
// the recording so far, as asprof does (async-profiler flushes it into
// the start's file and writes nothing to another: it was "the profiler
// wrote no output", exit 1); the stop still writes the whole one.
func TestJFRDumpWritesTheRecordingSoFar(t *testing.T) {
	t.Parallel()
	lib := testenv.AsyncProfiler(t)
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	dir := t.TempDir()
	if _, stderr, code := cli(t, nil, "profile", "start", "--agent", lib, "-e", "itimer", "-o", "jfr", pid); code != 0 {
		t.Fatalf("start: exit %d: %s", code, stderr)
	}
	for _, step := range [][]string{{"dump", "-f", filepath.Join(dir, "dump.jfr")}, {"stop", "-f", filepath.Join(dir, "stop.jfr")}} {
		if _, stderr, code := cli(t, nil, append(append([]string{"profile"}, step...), "--agent", lib, pid)...); code != 0 {
			t.Fatalf("%s: exit %d: %s", step[0], code, stderr)
		}
		if data, _ := os.ReadFile(step[2]); len(data) < 100 || string(data[:4]) != "FLR\x00" {
			t.Errorf("%s: %d bytes, not a recording", step[0], len(data))
		}
	}
}

// TestAgentDiscovery: an install's directory is taken for --agent (it
// was "not a regular file"); with nothing installed, a JVM that maps a
// copy safeattach delivered is profiled with it; the message for none at
// all says where it looked and how to name one.
func TestAgentDiscovery(t *testing.T) {
	t.Parallel()
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	home := t.TempDir()
	os.Mkdir(filepath.Join(home, "lib"), 0o755)
	data, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(home, "lib", "libasyncProfiler.so"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	bare := []string{"ASYNC_PROFILER_HOME=", "PATH=/usr/bin:/bin", "HOME=" + t.TempDir()}
	p := testenv.StartJVM(t, testenv.JVMSpec{})
	pid := fmt.Sprint(p.PID)
	if _, stderr, code := cli(t, bare, "profile", "-e", "itimer", "-d", "1", pid); code != exitError ||
		!strings.Contains(stderr, "$ASYNC_PROFILER_HOME (not set)") || !strings.Contains(stderr, "asprof on PATH (none)") || !strings.Contains(stderr, "install directory with --agent") {
		t.Errorf("nothing installed, nothing loaded: exit %d: %s", code, stderr)
	}
	out := filepath.Join(t.TempDir(), "p.collapsed")
	if _, stderr, code := cli(t, bare, "profile", "--agent", home, "-e", "itimer", "-d", "1", "-f", out, pid); code != 0 {
		t.Fatalf("--agent an install's directory: exit %d: %s", code, stderr)
	}
	if _, stderr, code := cli(t, bare, "profile", "-e", "itimer", "-d", "1", "-f", out, pid); code != 0 {
		t.Errorf("nothing installed, the JVM maps the delivered copy: exit %d: %s", code, stderr)
	}
	if data, _ := os.ReadFile(out); !strings.Contains(string(data), "[itimer]") {
		t.Errorf("profile: %q", data)
	}
}

// TestProfileHelpIsGrouped: profile's flags are under headings as
// asprof's are, and every flag is shown exactly once.
func TestProfileHelpIsGrouped(t *testing.T) {
	stdout, _, code := runCLI(t, "profile", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, g := range profileFlagGroups {
		if !strings.Contains(stdout, "\n"+g.title+":\n") {
			t.Errorf("no heading %q", g.title)
		}
	}
	newProfileCmd().Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		line := regexp.MustCompile(`(?m)^\s+(-\w, )?--` + regexp.QuoteMeta(f.Name) + `( |$)`)
		if n := len(line.FindAllString(stdout, -1)); n != 1 {
			t.Errorf("--%s shown %d times", f.Name, n)
		}
	})
}

// TestProfileVersion: profile --version says, as asprof --version does,
// which async-profiler would be used (an install's directory named by
// --agent), beside safeattach's own version.
func TestProfileVersion(t *testing.T) {
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	stdout, stderr, code := runCLI(t, "profile", "--version", "--agent", lib)
	if code != 0 || !strings.HasPrefix(stdout, "safeattach ") || !strings.Contains(stdout, "async-profiler") || !strings.Contains(stdout, lib) {
		t.Errorf("exit %d: %q %q", code, stdout, stderr)
	}
}
