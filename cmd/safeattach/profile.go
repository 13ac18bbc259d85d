package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/safeattach/safeattach/attach"
	"github.com/spf13/cobra"
)

func newProfileCmd() *cobra.Command {
	var (
		af       attachFlags
		req      attach.ProfileRequest
		seconds  int
		asJSON   bool
		progress bool
		modeFlag string
	)
	cmd := &cobra.Command{
		Use:   "profile [--lib PATH] [-e EVENT] [-d SECONDS] [-i INTERVAL] [-f FILE] [-o FORMAT] [--timeout DUR] PID",
		Short: "Profile a JVM with async-profiler if it is safe; Ctrl-C stops early and still writes the profile",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pid, err := parsePID(args[0])
			if err != nil {
				return err
			}
			if seconds <= 0 {
				return fmt.Errorf("-d %d: want a positive number of seconds", seconds)
			}
			req.Duration = time.Duration(seconds) * time.Second
			switch req.Output {
			case "":
				req.Output = fmt.Sprintf("profile-%d-%s.html", pid, time.Now().Format("20060102-150405"))
			case "-":
				req.Writer = cmd.OutOrStdout()
			}
			mode, err := strconv.ParseUint(modeFlag, 8, 32)
			if err != nil || mode > 0o777 {
				return fmt.Errorf("--mode %q: want octal permission bits such as 0644", modeFlag)
			}
			req.OutputMode = os.FileMode(mode)
			req.OutputOwner = sudoOwner()
			if req.Options, err = af.options(cmd); err != nil {
				return err
			}
			req.Options.Timeout = 0
			if cmd.Flags().Changed("timeout") {
				if af.timeout < req.Duration+attach.MinProfileOverhead {
					return fmt.Errorf("--timeout %v is shorter than -d %d s plus the %v it takes to start and stop; give at least %v", af.timeout, seconds, attach.MinProfileOverhead, req.Duration+attach.MinProfileOverhead)
				}
				req.Options.Timeout = af.timeout
			}
			stderr := cmd.ErrOrStderr()
			if progress || isTerminal(stderr) {
				req.Progress = func(elapsed, total time.Duration) {
					fmt.Fprintf(stderr, "\rprofiling pid %d (%s): %d/%d s ", pid, req.Event, int(elapsed.Seconds()), int(total.Seconds()))
				}
			}
			// Ctrl-C (the root context) ends the wait; the profiler is
			// still stopped and its output written.
			requested := req.Event
			res, err := attach.Profile(cmd.Context(), pid, req)
			if req.Progress != nil {
				fmt.Fprintln(stderr)
			}
			w := cmd.OutOrStdout()
			if err != nil {
				return attachError(w, err, asJSON)
			}
			if asJSON {
				return writeJSON(w, res)
			}
			if req.Writer != nil {
				return nil
			}
			note := ""
			if res.Cancelled {
				note = " (stopped early)"
			}
			if res.Event != "" && res.Event != requested {
				note += fmt.Sprintf(" (sampled with %s: the target cannot open perf events)", res.Event)
			}
			fmt.Fprintf(w, "wrote %s (%d bytes)%s; the JVM answers\n", res.Output, res.Bytes, note)
			printFindings(w, res.Verdict.Findings)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&req.Lib, "lib", "", "async-profiler library (default: $ASYNC_PROFILER_HOME, asprof on PATH, /opt/async-profiler)")
	f.StringVarP(&req.Event, "event", "e", "cpu", "event to sample: cpu, alloc, lock, wall, itimer, ...")
	f.IntVarP(&seconds, "duration", "d", 10, "profiling duration in seconds")
	f.StringVarP(&req.Interval, "interval", "i", "", "sampling interval (e.g. 10ms)")
	f.StringVarP(&req.Output, "file", "f", "", "output file, - for standard output (default profile-<pid>-<time>.html); a symlink, device or FIFO there is refused")
	f.StringVar(&modeFlag, "mode", "0644", "permission bits of the output file")
	f.StringVarP(&req.Format, "output", "o", "", "output format: flamegraph, collapsed, tree, jfr (default from the file name)")
	f.BoolVar(&asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&progress, "progress", false, "print progress even when stderr is not a terminal")
	f.BoolVar(&req.EventFallback, "event-fallback", false, "if -e cpu cannot open perf events in the target, sample with ctimer (async-profiler 3.0+) or itimer instead")
	af.register(cmd, 0)
	return cmd
}

// sudoOwner is the invoking user under sudo, who should own the profile
// rather than root.
func sudoOwner() *attach.Owner {
	if os.Geteuid() != 0 {
		return nil
	}
	uid, err1 := strconv.Atoi(os.Getenv("SUDO_UID"))
	gid, err2 := strconv.Atoi(os.Getenv("SUDO_GID"))
	if err1 != nil || err2 != nil || uid <= 0 {
		return nil
	}
	return &attach.Owner{UID: uid, GID: gid}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
