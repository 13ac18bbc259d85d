package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/testenv"
)

// TestLiveHostilePerfDataWaitCostsLittle: a pod's user — root
// in the pod, or nobody, the JVM's own user — replaces its starting
// JVM's hsperfdata with a 3.6 MB file of 65,535 entries saying
// sun.rt.createVmEndTime = 0, and root loads an agent, which waits for
// the JVM to finish initialising. The wait's CPU (the CLI's own, from
// the moment it says it waits to its exit: /proc/<pid>/stat, then its
// rusage) is at most 5 % of the time waited, and the wait ends when the
// JVM is startGrace (10 s) old, not at the deadline: with a refusal
// saying why (exit 2), or, when the counter is the file's last entry,
// past what is read of it, with the load (exit 0), as for a JVM with no
// hsperfdata. It used to re-read and re-parse the whole file every 5 ms
// until the deadline (64-69 % of a core for 30 s).
func TestLiveHostilePerfDataWaitCostsLittle(t *testing.T) {
	t.Parallel()
	bin := testenv.BuildCLI(t)
	lib := testenv.BuildAgent(t, testenv.AgentFixedLookalike)
	for _, c := range []struct {
		attacker uint32
		endAt    int // the counter's entry
		code     int
		says     string
	}{
		{0, 0, exitRefused, "has not finished initialising"},
		{65534, 0, exitRefused, "has not finished initialising"},
		{65534, 65534, exitOK, "loaded"},
	} {
		attacker, img := c.attacker, testenv.HostilePerfData(65535, c.endAt)
		t.Run(fmt.Sprintf("uid-%d-counter-%d", attacker, c.endAt), func(t *testing.T) {
			t.Parallel()
			// Not waiting for READY: the file is replaced as soon as the
			// JVM has made it, so that the JVM is young enough for the
			// wait to last seconds, however slow the machine.
			pod := testenv.StartPod(t, testenv.PodSpec{NoWait: true})
			root := fmt.Sprintf("/proc/%d/root", pod.PID)
			st, err := proc.FS{}.Proc(pod.PID).Status()
			if err != nil {
				t.Fatal(err)
			}
			file := fmt.Sprintf("/tmp/hsperfdata_nobody/%d", st.NSPid())
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				if _, err := os.Stat(root + file); err == nil {
					break
				}
				if time.Now().After(deadline) || !pod.Proc.Alive() {
					t.Fatalf("the JVM made no %s: %s", file, pod.Proc.Output())
				}
			}
			staged := filepath.Join(root, "tmp", ".hostile")
			if err := os.WriteFile(staged, img, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(staged, int(attacker), int(attacker)); err != nil {
				t.Fatal(err)
			}
			pod.Exec(t, attacker, "mv /tmp/.hostile "+file)

			cli := testenv.Start(t, exec.Command(bin, "load", "-v", "--timeout", "30s", fmt.Sprint(pod.PID), lib))
			cli.WaitOutput(t, "waiting for the JVM to finish initialising", 60*time.Second)
			before, err := proc.FS{}.Proc(cli.PID).Stat()
			if err != nil {
				t.Fatal(err)
			}
			from := time.Now()
			select {
			case <-cli.Exited():
			case <-time.After(2 * time.Minute):
				t.Fatal("the load did not end")
			}
			waited := time.Since(from)
			ps := cli.ExitState()
			cpu := ps.UserTime() + ps.SystemTime() - time.Duration(before.UTime+before.STime)*10*time.Millisecond
			t.Logf("attacker uid %d, counter at entry %d: waited %v, CPU %v (%.2f %% of one core); exit %d", attacker, c.endAt, waited.Round(time.Millisecond), cpu, 100*cpu.Seconds()/waited.Seconds(), ps.ExitCode())
			if waited < 2*time.Second {
				t.Errorf("the wait lasted %v: too short to measure (the JVM was already old?)", waited)
			}
			if cpu > waited/20 {
				t.Errorf("%v of CPU in a wait of %v: over 5 %%", cpu, waited)
			}
			if ps.ExitCode() != c.code || !strings.Contains(cli.Output(), c.says) {
				t.Errorf("exit %d:\n%s", ps.ExitCode(), cli.Output())
			}
		})
	}
}
