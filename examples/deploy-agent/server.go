package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/attach"
	"github.com/safeattach/safeattach/conflicts"
	"github.com/safeattach/safeattach/preflight"
	"github.com/safeattach/safeattach/profiling/asprof"
	"github.com/safeattach/safeattach/profiling/budget"
)

type config struct {
	Lib string
	// Converter is safeattach-pprof (default: beside this program or on
	// PATH), for pprof windows.
	Converter   string
	MaxProfiles int
	MaxDuration time.Duration
	Audit       io.Writer
	Logger      *slog.Logger
}

// server holds the daemon's state: a semaphore for concurrent profiles,
// one lock per JVM, and a channel closed on shutdown so that running
// profiles stop early and still return their output.
type server struct {
	cfg      config
	http     *http.Server
	profiles chan struct{}
	// stopping is closed, once (stopOnce), when Shutdown begins.
	stopping chan struct{}
	stopOnce sync.Once

	mu     sync.Mutex
	busy   map[int]bool
	active sync.WaitGroup
	audit  sync.Mutex

	// continuous holds the running continuous profiles by pid.
	cmu        sync.Mutex
	continuous map[int]*continuous
	// starting are the pids whose continuous profile is being opened.
	starting map[int]bool
	readBack *budget.Budget
}

// continuous is one JVM profiled window after window through
// profiling.Session.Windows: the agent is judged and delivered once, and the
// latest finished window is kept, in a buffer charged to the server's
// read-back budget (a window over it is dropped, the profiler goes on).
type continuous struct {
	session profiling.Profiler
	budget  *budget.Budget
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	latest  *budget.Buffer
	windows int
	dropped int
	err     error
}

// Read-back limits of the example: what comes back from a JVM is its
// own to shape.
const (
	continuousBudget = 64 << 20
	maxWindowBytes   = 16 << 20
	// maxContinuous bounds the continuous profiles that run at once.
	maxContinuous = 16
)

func newServer(cfg config) *server {
	if cfg.MaxProfiles <= 0 {
		cfg.MaxProfiles = 2
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 10 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &server{cfg: cfg, profiles: make(chan struct{}, cfg.MaxProfiles), stopping: make(chan struct{}), busy: map[int]bool{}, continuous: map[int]*continuous{}, starting: map[int]bool{}, readBack: budget.New(continuousBudget)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jvms", s.handleJVMs)
	mux.HandleFunc("GET /check", s.handleCheck)
	mux.HandleFunc("POST /profile", s.handleProfile)
	mux.HandleFunc("POST /continuous", s.handleContinuousStart)
	mux.HandleFunc("GET /continuous/{pid}", s.handleContinuousLatest)
	mux.HandleFunc("DELETE /continuous/{pid}", s.handleContinuousStop)
	s.http = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return s
}

// untilStopping is parent, also cancelled when the server stops. Its
// cancel must be called: that, the stop or parent's end ends the
// goroutine that waits for the stop.
func (s *server) untilStopping(parent context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(parent)
	select {
	case <-s.stopping: // already stopping: cancelled before it is used
		cancel()
		return ctx, cancel
	default:
	}
	go func() {
		select {
		case <-s.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// Serve serves HTTP on l until Shutdown.
func (s *server) Serve(l net.Listener) error {
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting requests, asks running profiles to stop (they
// still write and return their output), and waits for them.
func (s *server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stopping) })
	s.cmu.Lock()
	for pid, c := range s.continuous {
		c.cancel()
		<-c.done
		delete(s.continuous, pid)
	}
	s.cmu.Unlock()
	err := s.http.Shutdown(ctx)
	s.active.Wait()
	return err
}

// writeAudit appends one JSON line; the record comes from the library's
// audit hook, so every embedder gets the same trail.
func (s *server) writeAudit(r attach.AuditRecord) {
	s.audit.Lock()
	defer s.audit.Unlock()
	b, _ := json.Marshal(r)
	s.cfg.Audit.Write(append(b, '\n'))
}

func (s *server) options(r *http.Request) attach.Options {
	return attach.Options{Logger: s.cfg.Logger, Audit: s.writeAudit, Caller: r.RemoteAddr}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// httpError answers with the library's JSON envelope (the shape the CLI's
// --json gives every command): a request this server cannot take is an
// invalid one.
func httpError(w http.ResponseWriter, code int, command, format string, args ...any) {
	writeJSON(w, code, attach.NewEnvelope(command, fmt.Errorf("%w: %s", attach.ErrInvalidOptions, fmt.Sprintf(format, args...))))
}

// libraryError answers with the library's JSON result for err: the
// outcome, the exit code a CLI would give, and what the library knows
// (the verdict of a refusal, the hang report, who holds the profiler).
func libraryError(w http.ResponseWriter, command string, pid int, start time.Time, err error) {
	writeJSON(w, statusOf(err), profiling.NewJSONResult(command, pid, start, nil, err))
}

type jvmSummary struct {
	PID     int      `json:"pid"`
	NSPid   int      `json:"ns_pid"`
	UID     uint32   `json:"uid"`
	Kind    string   `json:"kind"`
	Version string   `json:"version"`
	Main    string   `json:"main"`
	Allowed bool     `json:"allowed"`
	Rules   []string `json:"rules,omitempty"`
}

func (s *server) agent(ctx context.Context) (*preflight.Agent, error) {
	return attach.FindAgent(ctx, s.cfg.Lib)
}

func (s *server) handleJVMs(w http.ResponseWriter, r *http.Request) {
	res, err := preflight.Scan(r.Context(), preflight.Options{})
	if err != nil {
		httpError(w, http.StatusInternalServerError, "jvms", "scan: %v", err)
		return
	}
	agent, err := s.agent(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "jvms", "agent: %v", err)
		return
	}
	out := []jvmSummary{}
	for _, rep := range res.JVMs {
		v := conflicts.Evaluate(rep, agent, conflicts.Policy{})
		out = append(out, jvmSummary{
			PID: rep.PID, NSPid: rep.Process.NSPid, UID: rep.Process.UID.Effective,
			Kind: string(rep.JVM.Kind), Version: rep.JVM.Version, Main: rep.JVM.MainClass,
			Allowed: v.Allowed, Rules: v.Causes(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *server) handleCheck(w http.ResponseWriter, r *http.Request) {
	pid, err := strconv.Atoi(r.URL.Query().Get("pid"))
	if err != nil || pid <= 0 {
		httpError(w, http.StatusBadRequest, "check", "want ?pid=<process id>")
		return
	}
	rep, err := preflight.Inspect(r.Context(), pid, preflight.Options{})
	if errors.Is(err, preflight.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, attach.NewEnvelope("check", err))
		return
	} else if err != nil {
		writeJSON(w, http.StatusInternalServerError, attach.NewEnvelope("check", err))
		return
	}
	agent, err := s.agent(r.Context())
	if err != nil {
		httpError(w, http.StatusInternalServerError, "jvms", "agent: %v", err)
		return
	}
	writeJSON(w, http.StatusOK, conflicts.Evaluate(rep, agent, conflicts.Policy{}))
}

type profileRequest struct {
	PID      int    `json:"pid"`
	Event    string `json:"event"`
	Duration string `json:"duration"`
	Format   string `json:"format"`
}

// lockJVM admits one attach at a time per JVM.
func (s *server) lockJVM(pid int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[pid] {
		return false
	}
	s.busy[pid] = true
	return true
}

func (s *server) unlockJVM(pid int) {
	s.mu.Lock()
	delete(s.busy, pid)
	s.mu.Unlock()
}

func (s *server) handleProfile(w http.ResponseWriter, r *http.Request) {
	var req profileRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.PID <= 0 {
		httpError(w, http.StatusBadRequest, "profile", "want a JSON body {\"pid\": N, \"event\": \"cpu\", \"duration\": \"10s\", \"format\": \"collapsed\"}")
		return
	}
	d := 10 * time.Second
	if req.Duration != "" {
		var err error
		if d, err = profiling.ParseDuration(req.Duration); err != nil || d > s.cfg.MaxDuration {
			httpError(w, http.StatusBadRequest, "profile", "duration %q: want a positive duration up to %v", req.Duration, s.cfg.MaxDuration)
			return
		}
	}
	if req.Format == "" {
		req.Format = "collapsed"
	}
	select {
	case s.profiles <- struct{}{}:
		defer func() { <-s.profiles }()
	default:
		httpError(w, http.StatusTooManyRequests, "profile", "%d profiles already running", cap(s.profiles))
		return
	}
	if !s.lockJVM(req.PID) {
		httpError(w, http.StatusConflict, "profile", "an attach to pid %d is already running", req.PID)
		return
	}
	defer s.unlockJVM(req.PID)
	s.active.Add(1)
	defer s.active.Done()

	// The profile waits in an anonymous file (no name anyone could
	// predict or open) until it is complete: the status line goes first.
	out, err := os.CreateTemp("", "deploy-agent-profile-*")
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, attach.NewEnvelope("profile", err))
		return
	}
	os.Remove(out.Name())
	defer out.Close()
	// The profile ends early when the client goes away or the daemon
	// shuts down; Profile still stops the profiler and writes the output.
	ctx, cancel := s.untilStopping(r.Context())
	defer cancel()
	start := time.Now()
	res, err := profiling.Profile(ctx, req.PID, profiling.ProfileRequest{
		SessionRequest: profiling.SessionRequest{Lib: s.cfg.Lib, Profiler: asprof.Options{Event: req.Event}, Format: req.Format, Converter: s.cfg.Converter, Options: s.options(r)},
		Duration:       d, Writer: out,
	})
	if err != nil {
		libraryError(w, "profile", req.PID, start, err)
		return
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		writeJSON(w, http.StatusInternalServerError, attach.NewEnvelope("profile", err))
		return
	}
	w.Header().Set("Content-Type", contentType(req.Format))
	w.Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", fmt.Sprintf("profile-%d.%s", req.PID, req.Format)))
	if res.Cancelled {
		w.Header().Set("X-Profile-Stopped-Early", "true")
	}
	w.WriteHeader(http.StatusOK)
	io.Copy(w, out)
}

// contentType is what a profile of format is served as.
func contentType(format string) string {
	if format == "pprof" || format == "jfr" {
		return "application/octet-stream"
	}
	return "text/plain; charset=utf-8"
}

type continuousRequest struct {
	PID    int    `json:"pid"`
	Event  string `json:"event"`
	Window string `json:"window"`
	// Format is each window's: collapsed (the default) or pprof, which
	// the library records as JFR and converts window by window.
	Format string `json:"format"`
}

// handleContinuousStart starts profiling a JVM window after window.
func (s *server) handleContinuousStart(w http.ResponseWriter, r *http.Request) {
	var req continuousRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil || req.PID <= 0 {
		httpError(w, http.StatusBadRequest, "continuous", "want a JSON body {\"pid\": N, \"event\": \"itimer\", \"window\": \"60s\", \"format\": \"pprof\"}")
		return
	}
	window, err := profiling.ParseDuration(req.Window)
	if err != nil || window < profiling.MinWindow || window > s.cfg.MaxDuration {
		httpError(w, http.StatusBadRequest, "continuous", "window %q: want %v to %v", req.Window, profiling.MinWindow, s.cfg.MaxDuration)
		return
	}
	if req.Format == "" {
		req.Format = "collapsed"
	}
	if req.Format != "collapsed" && req.Format != "pprof" {
		httpError(w, http.StatusBadRequest, "continuous", "format %q: want collapsed or pprof", req.Format)
		return
	}
	// The pid is claimed under the lock, and the session opened without
	// it: a slow JVM must not hold up every other continuous profile's
	// latest window, stop or shutdown.
	s.cmu.Lock()
	_, running := s.continuous[req.PID]
	switch {
	case running || s.starting[req.PID]:
		s.cmu.Unlock()
		httpError(w, http.StatusConflict, "continuous", "pid %d is already profiled continuously", req.PID)
		return
	case len(s.continuous)+len(s.starting) >= maxContinuous:
		s.cmu.Unlock()
		httpError(w, http.StatusTooManyRequests, "continuous", "%d continuous profiles already run", maxContinuous)
		return
	}
	s.starting[req.PID] = true
	s.cmu.Unlock()
	defer func() {
		s.cmu.Lock()
		delete(s.starting, req.PID)
		s.cmu.Unlock()
	}()
	start := time.Now()
	ss, err := profiling.Open(r.Context(), req.PID, profiling.SessionRequest{
		Lib: s.cfg.Lib, Profiler: asprof.Options{Event: req.Event}, Format: req.Format, Converter: s.cfg.Converter, Options: s.options(r),
		Owner: "deploy-agent", MaxOutput: maxWindowBytes, AutoStop: profiling.AutoStopFor(window),
	})
	if err == nil {
		if err = ss.Start(r.Context()); err != nil {
			ss.Close()
		}
	}
	if err != nil {
		libraryError(w, "continuous", req.PID, start, err)
		return
	}
	ctx, cancel := s.untilStopping(context.Background())
	c := &continuous{session: ss, budget: s.readBack, cancel: cancel, done: make(chan struct{})}
	s.cmu.Lock()
	s.continuous[req.PID] = c
	s.cmu.Unlock()
	go c.run(ctx, window)
	writeJSON(w, http.StatusCreated, map[string]any{"pid": req.PID, "event": ss.Event(), "format": ss.Format(), "window": window.String()})
}

// run profiles window after window until ctx ends; Windows then stops
// the profiler and hands over the last partial window too.
func (c *continuous) run(ctx context.Context, period time.Duration) {
	defer close(c.done)
	defer c.session.Close()
	// A loop that ends by itself (the JVM gone) ends ctx's watch for the
	// server's stop too.
	defer c.cancel()
	err := c.session.Windows(ctx, period, c.record)
	c.mu.Lock()
	c.err = err // the JVM is gone or the agent failed
	c.mu.Unlock()
}

// record keeps a finished window as the latest, if it fits the budget.
func (c *continuous) record(w *profiling.Window) error {
	buf := c.budget.Buffer(maxWindowBytes)
	err := w.Err
	if err == nil {
		if err = buf.Reserve(w.Size); err == nil {
			_, err = io.Copy(buf, w.Output)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		buf.Release()
		c.dropped++
		return nil
	}
	c.latest.Release()
	c.latest = buf
	c.windows++
	return nil
}

func (s *server) continuousFor(w http.ResponseWriter, r *http.Request) (int, *continuous) {
	pid, err := strconv.Atoi(r.PathValue("pid"))
	s.cmu.Lock()
	c := s.continuous[pid]
	s.cmu.Unlock()
	if err != nil || c == nil {
		httpError(w, http.StatusNotFound, "continuous", "pid %s is not profiled continuously", r.PathValue("pid"))
		return 0, nil
	}
	return pid, c
}

// handleContinuousLatest returns the latest finished window.
func (s *server) handleContinuousLatest(w http.ResponseWriter, r *http.Request) {
	_, c := s.continuousFor(w, r)
	if c == nil {
		return
	}
	// A copy: a slow client must not hold the window loop up.
	c.mu.Lock()
	windows, dropped, err := c.windows, c.dropped, c.err
	var data []byte
	if c.latest != nil {
		data = bytes.Clone(c.latest.Bytes())
	}
	c.mu.Unlock()
	if windows == 0 {
		if err != nil {
			writeJSON(w, statusOf(err), attach.NewEnvelope("continuous", err))
			return
		}
		writeJSON(w, http.StatusAccepted, attach.NewEnvelope("continuous", nil))
		return
	}
	w.Header().Set("Content-Type", contentType(c.session.Format()))
	w.Header().Set("X-Profile-Windows", strconv.Itoa(windows))
	w.Header().Set("X-Profile-Windows-Dropped", strconv.Itoa(dropped))
	w.Write(data)
}

// handleContinuousStop stops a continuous profile.
func (s *server) handleContinuousStop(w http.ResponseWriter, r *http.Request) {
	pid, c := s.continuousFor(w, r)
	if c == nil {
		return
	}
	c.cancel()
	<-c.done
	s.cmu.Lock()
	delete(s.continuous, pid)
	s.cmu.Unlock()
	c.mu.Lock()
	c.latest.Release()
	c.latest = nil
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// statusOf maps a library outcome to an HTTP status: the same
// classification the CLI's exit codes and the audit record use.
func statusOf(err error) int {
	switch attach.OutcomeOf(err) {
	case attach.OutcomeRefused:
		return http.StatusConflict
	case attach.OutcomeInvalid:
		return http.StatusBadRequest
	case attach.OutcomeTimedOut:
		return http.StatusGatewayTimeout
	case attach.OutcomeFailed:
		return http.StatusBadGateway
	}
	return http.StatusInternalServerError
}
