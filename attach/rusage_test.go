package attach

import (
	"syscall"
	"time"
)

// rusageSelf is this process's CPU time.
type rusageSelf struct{ cpu time.Duration }

func (r *rusageSelf) read() {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
