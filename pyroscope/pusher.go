package pyroscope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Pusher. URL is required.
type Config struct {
	// URL is the server's base address, e.g. http://pyroscope:4040.
	URL string
	// TenantID, if set, is sent as X-Scope-OrgID (multi-tenant servers).
	TenantID string
	// BasicUser/BasicPassword or BearerToken authenticate; neither is
	// ever logged.
	BasicUser, BasicPassword string
	BearerToken              string
	// QueueSize bounds the windows waiting to be sent (default 16).
	QueueSize int
	// RetryBase and RetryMax bound the backoff (default 1 s and 30 s).
	RetryBase, RetryMax time.Duration
	// Timeout bounds one request (default 30 s).
	Timeout time.Duration
	// Client is the HTTP client (default: a fresh one).
	Client *http.Client
	Logger *slog.Logger
	// Observe, if set, is told of every request: how long it took, the
	// status (0 without one) and the error (for latency metrics).
	Observe func(took time.Duration, status int, err error)
}

// Window is one finished profile.
type Window struct {
	// App is the service name; Labels are added to it (namespace, pod,
	// container, node...).
	App    string
	Labels map[string]string
	From   time.Time
	Until  time.Time
	// Format is "jfr" (async-profiler's JFR) or "folded" (collapsed
	// stacks).
	Format string
	// SampleRate is samples per second for folded profiles (default 100).
	SampleRate int
	Data       []byte
	// Release, if set, is called once the pusher is done with Data (sent,
	// rejected, or dropped): a budget.Buffer's, so that windows waiting
	// in the queue are counted against the caller's memory budget.
	Release func()
}

func (w Window) release() {
	if w.Release != nil {
		w.Release()
	}
}

// Stats count what happened to windows.
type Stats struct {
	Sent, Retries, Dropped, Rejected, Queued int
}

// Pusher queues and sends windows.
type Pusher struct {
	cfg Config
	// sending is set while the head window is being sent: dropping it
	// then leaves its release to the sender, which still reads its Data.
	sending, droppedWhileSending bool
	mu                           sync.Mutex
	queue                        []Window
	wake                         chan struct{}
	stats                        Stats
	// settled is closed (and replaced) each time a send ends or the
	// queue is let go: what Drain waits on.
	settled chan struct{}
}

// NewPusher validates cfg.
func NewPusher(cfg Config) (*Pusher, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("pyroscope URL %q: want http(s)://host[:port]", cfg.URL)
	}
	if cfg.QueueSize <= 0 {
		cfg.QueueSize = 16
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = 30 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	// A copy of the caller's client (or a new one) that follows no
	// redirect to another host or port: the request carries the body,
	// the tenant header and the credentials, and net/http would re-send
	// the tenant header to any host, and Authorization to the same host
	// on another port.
	client := &http.Client{}
	if cfg.Client != nil {
		c := *cfg.Client
		client = &c
	}
	client.CheckRedirect = sameOrigin
	cfg.Client = client
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pusher{cfg: cfg, wake: make(chan struct{}, 1), settled: make(chan struct{})}, nil
}

// errRedirect: the server redirected to another origin.
var errRedirect = errors.New("redirect to another host or port refused")

// sameOrigin lets a redirect through only to the same scheme, host and
// port, at most three times.
func sameOrigin(req *http.Request, via []*http.Request) error {
	if len(via) >= 3 {
		return fmt.Errorf("%w: more than 3 redirects", errRedirect)
	}
	first := via[0].URL
	if req.URL.Scheme != first.Scheme || req.URL.Host != first.Host {
		return fmt.Errorf("%w: %s://%s to %s://%s (the body, tenant and credentials are not sent there)", errRedirect, first.Scheme, first.Host, req.URL.Scheme, req.URL.Host)
	}
	return nil
}

// Enqueue adds a window without ever blocking; when the queue is full the
// oldest window is dropped (and counted). It reports whether one was.
func (p *Pusher) Enqueue(w Window) (droppedOldest bool) {
	p.mu.Lock()
	if len(p.queue) >= p.cfg.QueueSize {
		if p.sending {
			p.droppedWhileSending = true
		} else {
			p.queue[0].release()
		}
		p.queue = p.queue[1:]
		p.stats.Dropped++
		droppedOldest = true
	}
	p.queue = append(p.queue, w)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
	return droppedOldest
}

// Stats returns the counters.
func (p *Pusher) Stats() Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Queued = len(p.queue)
	return s
}

// Run sends queued windows until ctx ends.
func (p *Pusher) Run(ctx context.Context) {
	defer p.releaseAll()
	for {
		p.mu.Lock()
		var w Window
		head := len(p.queue) > 0
		if head {
			w = p.queue[0]
			p.sending, p.droppedWhileSending = true, false
		}
		p.mu.Unlock()
		if !head {
			select {
			case <-ctx.Done():
				return
			case <-p.wake:
				continue
			}
		}
		more := p.sendWithRetry(ctx, w)
		p.mu.Lock()
		p.sending = false
		if p.droppedWhileSending {
			w.release()
		}
		p.settle()
		p.mu.Unlock()
		if !more {
			return // ctx ended
		}
	}
}

// releaseAll releases the windows still queued when Run ends.
func (p *Pusher) releaseAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, w := range p.queue {
		w.release()
	}
	p.queue = nil
	p.settle()
}

// settle wakes the Drains (p.mu held).
func (p *Pusher) settle() {
	close(p.settled)
	p.settled = make(chan struct{})
}

// Drain waits until every window queued so far has been sent (or given
// up on), or ctx ends: what a shutdown does after its profilers took
// their last windows, before it stops Run. It does not stop Run.
func (p *Pusher) Drain(ctx context.Context) error {
	for {
		p.mu.Lock()
		if len(p.queue) == 0 && !p.sending {
			p.mu.Unlock()
			return nil
		}
		settled := p.settled
		p.mu.Unlock()
		select {
		case <-settled:
		case <-ctx.Done():
			return fmt.Errorf("pyroscope: %d windows not sent: %w", p.Stats().Queued, ctx.Err())
		}
	}
}

// sendWithRetry sends the head window until it is accepted, rejected for
// good, dropped meanwhile (the queue overflowed), or ctx ends.
func (p *Pusher) sendWithRetry(ctx context.Context, w Window) bool {
	delay := p.cfg.RetryBase
	for attempt := 0; ; attempt++ {
		began := time.Now()
		status, err := p.send(ctx, w)
		if p.cfg.Observe != nil {
			p.cfg.Observe(time.Since(began), status, err)
		}
		switch {
		case err == nil && status < 300:
			p.finish(w, func(s *Stats) { s.Sent++ })
			return true
		case err == nil && status != http.StatusTooManyRequests && status < 500:
			p.cfg.Logger.Warn("pyroscope: window rejected", "app", w.App, "status", status)
			p.finish(w, func(s *Stats) { s.Rejected++ })
			return true
		case errors.Is(err, errRedirect):
			p.cfg.Logger.Warn("pyroscope: window not sent", "app", w.App, "error", errString(err))
			p.finish(w, func(s *Stats) { s.Rejected++ })
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.cfg.Logger.Info("pyroscope: retrying", "app", w.App, "status", status, "error", errString(err), "in", delay)
		p.mu.Lock()
		p.stats.Retries++
		stillHead := len(p.queue) > 0 && sameWindow(p.queue[0], w)
		p.mu.Unlock()
		if !stillHead {
			return true // dropped by the queue bound meanwhile
		}
		// Jitter keeps many daemons from retrying in step.
		sleep := delay/2 + time.Duration(rand.Int64N(int64(delay/2)+1))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(sleep):
		}
		delay = min(delay*2, p.cfg.RetryMax)
	}
}

func sameWindow(a, b Window) bool {
	return a.App == b.App && a.From.Equal(b.From) && a.Until.Equal(b.Until) && len(a.Data) == len(b.Data)
}

// finish removes w from the head of the queue (if it is still there)
// and releases it.
func (p *Pusher) finish(w Window, count func(*Stats)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	count(&p.stats)
	if len(p.queue) > 0 && sameWindow(p.queue[0], w) {
		p.queue[0].release()
		p.queue = p.queue[1:]
	}
}

// send makes one request and returns the status.
func (p *Pusher) send(ctx context.Context, w Window) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, IngestURL(p.cfg.URL, w), bytes.NewReader(w.Data))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if p.cfg.TenantID != "" {
		req.Header.Set("X-Scope-OrgID", p.cfg.TenantID)
	}
	switch {
	case p.cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+p.cfg.BearerToken)
	case p.cfg.BasicUser != "":
		req.SetBasicAuth(p.cfg.BasicUser, p.cfg.BasicPassword)
	}
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	return resp.StatusCode, nil
}

var labelKey = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_.]*$`)

// IngestURL builds the ingest request's address. The application name
// carries the labels as Pyroscope's ingest handler parses them:
// name{k=v,k2=v2}; characters the syntax reserves (",", "=", "{", "}")
// in names and values are replaced with "_", and labels with invalid
// keys are dropped.
func IngestURL(base string, w Window) string {
	clean := strings.NewReplacer(",", "_", "=", "_", "{", "_", "}", "_", " ", "_")
	name := clean.Replace(w.App)
	var keys []string
	for k := range w.Labels {
		if labelKey.MatchString(k) && k != "__name__" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, k+"="+clean.Replace(w.Labels[k]))
	}
	name += "{" + strings.Join(parts, ",") + "}"
	q := url.Values{}
	q.Set("name", name)
	q.Set("from", strconv.FormatInt(w.From.Unix(), 10))
	q.Set("until", strconv.FormatInt(w.Until.Unix(), 10))
	format := w.Format
	if format == "collapsed" {
		format = "folded"
	}
	q.Set("format", format)
	if format == "folded" {
		rate := w.SampleRate
		if rate <= 0 {
			rate = 100
		}
		q.Set("sampleRate", strconv.Itoa(rate))
	}
	q.Set("spyName", "safeattach")
	return strings.TrimRight(base, "/") + "/ingest?" + q.Encode()
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	// Never a URL with credentials: the URL has none (auth is a header).
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + ": " + ue.Err.Error()
	}
	return err.Error()
}
