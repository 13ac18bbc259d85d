package profiling

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/safeattach/safeattach/profiling/fdtransfer"
)

// A detached start (SessionRequest.Detached) outlives its caller, and so
// must the descriptor server its profiler asks for perf events as threads
// come and go: it runs as a process of its own, as asprof's does. The
// caller names the command (SessionRequest.FdTransferHelper: its own
// program with a subcommand that calls ServeFdTransfer); Start and
// Resume run it with the policy's flags and the pid appended
// (--event E [--kernel] [--lbr] PID), read the socket's name from its
// first line, and let it go once the profiler started — or end it if
// the start failed. It exits when the profiler hangs up (the stop) or
// the JVM exits.

// helperStartTimeout bounds how long a helper may take to say where it
// listens.
const helperStartTimeout = 5 * time.Second

// HelperArgs are the arguments a helper is run with after its command.
func HelperArgs(policy fdtransfer.Policy, pid int) []string {
	args := []string{"--event", policy.Event}
	if policy.Kernel {
		args = append(args, "--kernel")
	}
	if policy.LBR {
		args = append(args, "--lbr")
	}
	return append(args, strconv.Itoa(pid))
}

// ServeFdTransfer is the helper's side: it listens for pid's profiler
// under policy, writes the socket's name (or "error: …") as the first
// line of announce and closes it when it is a file (the starter reads
// until there), then serves until the profiler hangs up or ctx ends.
func ServeFdTransfer(ctx context.Context, pid int, policy fdtransfer.Policy, announce io.Writer) error {
	srv, err := fdtransfer.Listen(pid, policy)
	if err != nil {
		fmt.Fprintln(announce, "error:", err)
		return err
	}
	defer srv.Close()
	fmt.Fprintln(announce, srv.Name())
	if f, ok := announce.(*os.File); ok {
		f.Close()
	}
	return srv.Serve(ctx)
}

// startHelper runs the helper command for pid under policy in a session
// of its own and returns the socket it listens on.
func startHelper(ctx context.Context, command []string, pid int, policy fdtransfer.Policy) (string, *os.Process, error) {
	if len(command) == 0 {
		return "", nil, errors.New("--fdtransfer: a detached start needs a descriptor server that outlives this process (SessionRequest.FdTransferHelper)")
	}
	c := exec.Command(command[0], append(command[1:], HelperArgs(policy, pid)...)...)
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := c.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := c.Start(); err != nil {
		return "", nil, fmt.Errorf("--fdtransfer: %w", err)
	}
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(io.LimitReader(out, 256)).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	fail := func(err error) (string, *os.Process, error) {
		c.Process.Kill()
		c.Wait()
		return "", nil, err
	}
	t := time.NewTimer(helperStartTimeout)
	defer t.Stop()
	select {
	case name := <-line:
		if !strings.HasPrefix(name, "@") {
			c.Wait()
			return "", nil, fmt.Errorf("--fdtransfer: the descriptor server did not start: %s", strings.TrimPrefix(name, "error: "))
		}
		out.Close() // the helper said where it listens: nothing more is read
		return name, c.Process, nil
	case <-ctx.Done():
		return fail(ctx.Err())
	case <-t.C:
		return fail(fmt.Errorf("--fdtransfer: the descriptor server did not start within %v", helperStartTimeout))
	}
}
