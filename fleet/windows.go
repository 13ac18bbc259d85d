package fleet

import (
	"errors"
	"io"
	"log/slog"

	"github.com/safeattach/safeattach/profiling"

	"github.com/safeattach/safeattach/internal/safefile"
	"github.com/safeattach/safeattach/profiling/budget"
	"github.com/safeattach/safeattach/pyroscope"
)

// finished takes one window: read into a buffer charged to the budget
// (over budget, it is dropped, counted and logged with its pod — the
// profiler goes on) and queued for the pusher, which releases it.
func (d *Daemon) finished(w wanted, win *profiling.Window, engine profiling.Engine, log *slog.Logger) {
	if win.Err != nil {
		if errors.Is(win.Err, profiling.ErrNoOutput) {
			d.cfg.Metrics.window("empty", engine)
			log.Warn("profile window empty")
			return
		}
		d.dropped(win, win.Err, engine, log)
		return
	}
	buf := d.cfg.Budget.Buffer(d.cfg.MaxWindowBytes)
	err := buf.Reserve(win.Size)
	if err == nil {
		_, err = io.Copy(buf, win.Output)
	}
	if err != nil {
		buf.Release()
		d.dropped(win, err, engine, log)
		return
	}
	if buf.Len() == 0 {
		buf.Release()
		d.cfg.Metrics.window("empty", engine)
		log.Warn("profile window empty")
		return
	}
	d.cfg.Metrics.window("ok", engine)
	if d.cfg.Pusher == nil {
		buf.Release()
		return
	}
	// The Flight Recorder's windows are its recordings, whatever Format
	// says for async-profiler's.
	format := "jfr"
	if d.cfg.Format == "collapsed" && engine == profiling.AsyncProfiler {
		format = "folded"
	}
	service, refused := serviceAnnotation(w.pod, w.container.Name)
	refused.log(log, service)
	// engine tells the two profilers' flame graphs apart: the Flight
	// Recorder's hold Java frames only.
	labels := map[string]string{"namespace": w.pod.Namespace, "pod": w.pod.Name, "container": w.container.Name, "engine": string(engine)}
	if w.pod.Node != "" {
		labels["node"] = w.pod.Node
	}
	if d.cfg.Pusher.Enqueue(pyroscope.Window{App: service, Labels: labels, From: win.From, Until: win.Until, Format: format, Data: buf.Bytes(), Release: buf.Release}) {
		log.Warn("push queue full: oldest window dropped")
	}
}

// dropped counts and logs a window that could not be taken.
func (d *Daemon) dropped(win *profiling.Window, err error, engine profiling.Engine, log *slog.Logger) {
	result := "invalid"
	if errors.Is(err, budget.ErrExhausted) || errors.Is(err, budget.ErrTooLarge) || errors.Is(err, safefile.ErrTooLarge) {
		result = "over-budget"
	}
	d.cfg.Metrics.window(result, engine)
	log.Warn("profile window dropped", "result", result, "window", win.N, "bytes", win.Size, "err", logText(err))
}
