package preflight

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"sync"

	"github.com/safeattach/safeattach/internal/proc"
	"github.com/safeattach/safeattach/internal/safefile"
)

// ScanResult is every JVM on the host (containers included: their
// processes are in our /proc too) and what could not be read.
type ScanResult struct {
	JVMs []*Report `json:"jvms"`
	// Processes counts every process looked at; NotJVM those skipped.
	Processes int `json:"processes"`
	NotJVM    int `json:"not_jvm"`
	// Unreadable lists processes we may not read (or that vanished while
	// read), with why: counted and reported, never an error.
	Unreadable []ScanFailure `json:"unreadable,omitempty"`
}

// ScanFailure is one process that could not be classified or inspected.
type ScanFailure struct {
	PID    int    `json:"pid"`
	Reason string `json:"reason"`
	// JVM is set when the process is known to be a JVM by its hsperfdata
	// file (/tmp/hsperfdata_<user>/<pid>, which every HotSpot JVM with
	// UsePerfData keeps) although its maps could not be read: a JVM the
	// scan cannot judge, rather than an unknown process.
	JVM bool `json:"jvm,omitempty"`
}

// Scan inspects every JVM on the host. Non-JVMs are recognised from their
// maps alone (no libjvm.so or libj9vm mapped) and skipped quietly.
func Scan(ctx context.Context, opts Options) (*ScanResult, error) {
	fsys := proc.NewFS(opts.ProcRoot)
	pids, err := fsys.PIDs()
	if err != nil {
		return nil, err
	}
	res := &ScanResult{Processes: len(pids)}
	var mu sync.Mutex
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for pid := range work {
				r, isJVM, err := scanOne(ctx, fsys, pid, opts)
				mu.Lock()
				switch {
				case err != nil:
					res.Unreadable = append(res.Unreadable, ScanFailure{PID: pid, Reason: err.Error()})
				case !isJVM:
					res.NotJVM++
				default:
					res.JVMs = append(res.JVMs, r)
				}
				mu.Unlock()
			}
		}()
	}
	for _, pid := range pids {
		if ctx.Err() != nil {
			break
		}
		work <- pid
	}
	close(work)
	wg.Wait()
	if len(res.Unreadable) > 0 {
		perf := perfDataPIDs()
		for i := range res.Unreadable {
			res.Unreadable[i].JVM = perf[res.Unreadable[i].PID]
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sort.Slice(res.JVMs, func(a, b int) bool { return res.JVMs[a].PID < res.JVMs[b].PID })
	sort.Slice(res.Unreadable, func(a, b int) bool { return res.Unreadable[a].PID < res.Unreadable[b].PID })
	return res, nil
}

// scanOne classifies a process by its maps, then inspects a JVM fully.
func scanOne(ctx context.Context, fsys proc.FS, pid int, opts Options) (*Report, bool, error) {
	kind, _, err := fsys.Proc(pid).JVMKind()
	isJVM := kind != ""
	switch {
	case err != nil && errors.Is(err, fs.ErrNotExist):
		return nil, false, nil // exited meanwhile: nothing to report
	case err != nil:
		return nil, false, err
	case !isJVM:
		return nil, false, nil
	}
	r, err := Inspect(ctx, pid, opts)
	if errors.Is(err, ErrNotFound) {
		return nil, false, nil
	}
	return r, err == nil, err
}

// perfDataPIDs lists the pids that have an hsperfdata file in this
// host's /tmp: HotSpot JVMs (in our pid namespace) whatever their maps
// say. Bounded: at most 64 users' directories and 4096 entries each.
func perfDataPIDs() map[int]bool {
	out := map[int]bool{}
	dirs, _ := filepath.Glob("/tmp/hsperfdata_*")
	if len(dirs) > 64 {
		dirs = dirs[:64]
	}
	for _, d := range dirs {
		// Any user can create /tmp/hsperfdata_<name>, as a FIFO too.
		f, err := safefile.OpenDir(d)
		if err != nil {
			continue
		}
		names, _ := f.Readdirnames(4096)
		f.Close()
		for _, n := range names {
			if pid, err := strconv.Atoi(n); err == nil {
				out[pid] = true
			}
		}
	}
	return out
}
