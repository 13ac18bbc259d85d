package hotspot

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Protocol limits (docs/attach-protocol.md).
const (
	v1MaxCommand = 16
	v1MaxArg     = 1024
	v1Args       = 3
	v2MaxSize    = 262144
)

// maxStatusLine bounds the first reply line: "<int>\n".
const maxStatusLine = 64

// DefaultMaxReply is Client.MaxReply's default: a thread dump of 10,000
// threads is about 20 MiB; async-profiler's and the Flight Recorder's
// answers are a few KiB.
const DefaultMaxReply = 32 << 20

// Client runs attach commands against one target. It is safe for
// concurrent use: requests to the same JVM are serialised (the listener is
// single-threaded and a half-sent request blocks it), requests to
// different JVMs run in parallel.
type Client struct {
	JVM *JVM
	// MaxReply bounds one command's answer (default DefaultMaxReply): the
	// JVM is the target's, and a target that took over its own attach
	// socket can answer with endless bytes. Past it, the command fails
	// with ErrReplyTooLong and the connection is closed.
	MaxReply int64

	mu      sync.Mutex
	version *protocolVersion // learned lazily, only when v1 does not fit
}

type protocolVersion struct {
	v2, streaming bool
}

// NewClient returns a client for t.
func NewClient(t *JVM) *Client { return &Client{JVM: t} }

// Response is a command's status and output.
type Response struct {
	Code   int
	Output []byte
}

// Execute runs cmd with args and copies the output to out as it arrives
// (JDK 25 streams it live), returning the status code. The connection is
// always read to EOF. Every step is bounded by ctx.
func (c *Client) Execute(ctx context.Context, out io.Writer, cmd string, args ...string) (int, error) {
	release, err := acquire(ctx, c.JVM)
	if err != nil {
		return 0, err
	}
	defer release()
	req, err := c.encode(ctx, cmd, args)
	if err != nil {
		return 0, err
	}
	return c.roundTrip(ctx, req, out, cmd)
}

// Run is Execute into a buffer; a non-zero status is a *CommandError.
func (c *Client) Run(ctx context.Context, cmd string, args ...string) (*Response, error) {
	var buf bytes.Buffer
	code, err := c.Execute(ctx, &buf, cmd, args...)
	if err != nil {
		return nil, err
	}
	r := &Response{Code: code, Output: buf.Bytes()}
	if code != 0 {
		return r, &CommandError{Code: code, Command: cmd, Message: strings.TrimSpace(buf.String())}
	}
	return r, nil
}

// encode picks the protocol: v1 whenever the request fits its limits (one
// round trip, every JDK); otherwise v2 if the JVM offers it, else a clear
// error instead of the JVM's silent hang-up.
func (c *Client) encode(ctx context.Context, cmd string, args []string) ([]byte, error) {
	if fitsV1(cmd, args) {
		return encodeV1(cmd, args), nil
	}
	v, err := c.protocol(ctx)
	if err != nil {
		return nil, err
	}
	if !v.v2 {
		return nil, fmt.Errorf("%w: %s", ErrRequestTooLong, v1Limits(cmd, args))
	}
	return encodeV2(cmd, args)
}

func fitsV1(cmd string, args []string) bool {
	if len(cmd) > v1MaxCommand || len(args) > v1Args {
		return false
	}
	for _, a := range args {
		if len(a) > v1MaxArg || strings.IndexByte(a, 0) >= 0 {
			return false
		}
	}
	return strings.IndexByte(cmd, 0) < 0
}

func v1Limits(cmd string, args []string) string {
	longest := 0
	for _, a := range args {
		longest = max(longest, len(a))
	}
	return fmt.Sprintf("%q with %d arguments (longest %d bytes) exceeds protocol v1's limits (16-byte command, 3 arguments of 1024 bytes), and this JVM does not offer protocol v2 (JDK 24+)", cmd, len(args), longest)
}

// encodeV1: "1\0" cmd "\0" a0 "\0" a1 "\0" a2 "\0", always three arguments.
func encodeV1(cmd string, args []string) []byte {
	var b bytes.Buffer
	b.WriteString("1\x00")
	b.WriteString(cmd)
	b.WriteByte(0)
	for i := 0; i < v1Args; i++ {
		if i < len(args) {
			b.WriteString(args[i])
		}
		b.WriteByte(0)
	}
	return b.Bytes()
}

// encodeV2: "2\0" <size> "\0" <cmd> "\0" (<arg> "\0")*, where size counts
// every byte after the size field's NUL.
func encodeV2(cmd string, args []string) ([]byte, error) {
	var body bytes.Buffer
	for _, s := range append([]string{cmd}, args...) {
		if strings.IndexByte(s, 0) >= 0 {
			return nil, fmt.Errorf("%w: NUL byte in an argument", ErrRequestTooLong)
		}
		body.WriteString(s)
		body.WriteByte(0)
	}
	if body.Len() > v2MaxSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds protocol v2's %d", ErrRequestTooLong, body.Len(), v2MaxSize)
	}
	out := []byte("2\x00" + strconv.Itoa(body.Len()) + "\x00")
	return append(out, body.Bytes()...), nil
}

// protocol asks the JVM once which protocol it speaks:
//
//	JDK ≤ 23  "-1\nOperation getversion not recognized!"
//	JDK 24    "0\n2"
//	JDK 25+   "0\n2 streaming"
func (c *Client) protocol(ctx context.Context) (protocolVersion, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != nil {
		return *c.version, nil
	}
	var buf bytes.Buffer
	code, err := c.roundTrip(ctx, encodeV1("getversion", []string{"options"}), &buf, "getversion")
	if err != nil {
		return protocolVersion{}, err
	}
	v := protocolVersion{}
	if code == 0 {
		fields := strings.Fields(buf.String())
		v.v2 = len(fields) > 0 && fields[0] >= "2"
		for _, f := range fields[1:] {
			v.streaming = v.streaming || f == "streaming"
		}
	}
	c.version = &v
	return v, nil
}

// roundTrip sends one request and reads the reply to EOF.
func (c *Client) roundTrip(ctx context.Context, req []byte, out io.Writer, cmd string) (int, error) {
	t := c.JVM
	conn, err := dial(ctx, t)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	// One deadline for the whole exchange, and cancellation closes the
	// socket under a blocked read.
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// The whole request in one write: a partial request would block the
	// single-threaded listener for every other client.
	if _, err := conn.Write(req); err != nil {
		return 0, c.ioError(ctx, err, "send "+cmd)
	}
	_ = shutdownWrite(conn)
	r := bufio.NewReaderSize(conn, 64<<10)
	line, err := readStatusLine(r)
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) == 0 {
			return 0, fmt.Errorf("%s: %w (a JDK 10 or older JVM rejects root; an over-long request is dropped)", cmd, ErrConnectionClosed)
		}
		return 0, c.ioError(ctx, err, "read status of "+cmd)
	}
	code, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		return 0, fmt.Errorf("%s: malformed status line %q", cmd, line)
	}
	limit := c.MaxReply
	if limit <= 0 {
		limit = DefaultMaxReply
	}
	n, err := io.Copy(out, io.LimitReader(r, limit+1))
	if err != nil {
		return code, c.ioError(ctx, err, "read output of "+cmd)
	}
	if n > limit {
		return code, fmt.Errorf("%s: %w (more than %d bytes; the rest was not read)", cmd, ErrReplyTooLong, limit)
	}
	return code, nil
}

func readStatusLine(r *bufio.Reader) (string, error) {
	var b []byte
	for len(b) <= maxStatusLine {
		c, err := r.ReadByte()
		if err != nil {
			return string(b), err
		}
		if c == '\n' {
			return string(b), nil
		}
		b = append(b, c)
	}
	return string(b), fmt.Errorf("status line longer than %d bytes", maxStatusLine)
}

func (c *Client) ioError(ctx context.Context, err error, what string) error {
	if ctx.Err() != nil || isTimeout(err) {
		return fmt.Errorf("%w: %s from pid %d", ErrTimeout, what, c.JVM.PID)
	}
	if !c.JVM.alive() {
		return fmt.Errorf("%s: pid %d: %w", what, c.JVM.PID, ErrTargetExited)
	}
	// A JVM killed mid-reply resets the connection before /proc says it
	// is gone: the attach failed, whatever the JVM's state a moment later.
	if errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EPIPE) {
		return fmt.Errorf("%s: pid %d: %w (%v)", what, c.JVM.PID, ErrConnectionClosed, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isTimeout(err error) bool {
	return errors.Is(err, os.ErrDeadlineExceeded)
}

// shutdownWrite half-closes the connection: the JVM reads the request to
// EOF before it answers.
func shutdownWrite(conn *os.File) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = unix.Shutdown(int(fd), unix.SHUT_WR) }); err != nil {
		return err
	}
	return serr
}

// Per-JVM serialisation: one request at a time per (pid, start time).
var (
	locksMu sync.Mutex
	locks   = map[[2]uint64]*jvmLock{}
)

type jvmLock struct {
	ch   chan struct{}
	refs int
}

func acquire(ctx context.Context, t *JVM) (func(), error) {
	key := [2]uint64{uint64(t.PID), t.StartTime}
	locksMu.Lock()
	l := locks[key]
	if l == nil {
		l = &jvmLock{ch: make(chan struct{}, 1)}
		locks[key] = l
	}
	l.refs++
	locksMu.Unlock()
	unref := func() {
		locksMu.Lock()
		l.refs--
		if l.refs == 0 {
			delete(locks, key)
		}
		locksMu.Unlock()
	}
	select {
	case l.ch <- struct{}{}:
		return func() { <-l.ch; unref() }, nil
	case <-ctx.Done():
		unref()
		return nil, fmt.Errorf("%w: another attach to pid %d is still running", ErrTimeout, t.PID)
	}
}
