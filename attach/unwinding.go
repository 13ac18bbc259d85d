package attach

import (
	"context"
	"time"
)

// StopAfterCancel is how long a profile's stop, write-back and health
// check may take once the caller cancelled (a Ctrl-C), the cancellation
// notwithstanding: the profiler is stopped and what it collected written
// within it, or the caller says why not. A caller that gives up later still
// leaves nothing running for long: the profiler's own timeout=
// (the profiling layer starts it with one) ends it.
const StopAfterCancel = 10 * time.Second

// Unwinding is ctx for what must still be finished once ctx is cancelled
// (a stop, a write-back, a conversion): the cancellation reaches it only
// StopAfterCancel later.
func Unwinding(ctx context.Context) (context.Context, context.CancelFunc) {
	u, cancel := context.WithCancel(context.WithoutCancel(ctx))
	stop := context.AfterFunc(ctx, func() { time.AfterFunc(StopAfterCancel, cancel) })
	return u, func() { stop(); cancel() }
}
