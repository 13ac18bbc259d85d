package jfrpprof

import (
	"bufio"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/safeattach/safeattach/profiling/flamegraph"
)

// Folded is one profile as folded stacks: what async-profiler's
// collapsed, flat and flame graph outputs are made of.
type Folded struct {
	// Metric and Engine are the profile's (Profile.Metric, .Engine).
	Metric, Engine string
	// Stacks are the distinct stacks of frame names, root first, each
	// with its number of samples, in the order of their frames.
	Stacks []flamegraph.Stack
}

// Fold turns a profile into folded stacks. Java frames are named
// pkg.Class.method, as a Java programmer writes them (the recording
// has java/lang/Thread); stacks that differ only in line numbers are
// one. A count is a number of samples: events for allocations and
// locks, and CPU or wall samples for time, which the profile holds
// weighed as time.
func Fold(p Profile) Folded {
	div := int64(1)
	if len(p.Profile.SampleType) > 0 {
		if st := p.Profile.SampleType[0]; st.Unit == "nanoseconds" && (st.Type == "cpu" || st.Type == "wall") {
			div = 1e9 / sampleRate
		}
	}
	names := map[uint64]string{}
	var stacks []flamegraph.Stack
	for _, s := range p.Profile.Sample {
		if len(s.Value) == 0 || s.Value[0]/div <= 0 {
			continue
		}
		var frames []string
		// The profile lists a stack leaf first, and each location's
		// inlined functions innermost first.
		for i := len(s.Location) - 1; i >= 0; i-- {
			loc := s.Location[i]
			for j := len(loc.Line) - 1; j >= 0; j-- {
				fn := loc.Line[j].Function
				if fn == nil {
					continue
				}
				name, ok := names[fn.ID]
				if !ok {
					name = javaName(fn.Name)
					names[fn.ID] = name
				}
				frames = append(frames, name)
			}
		}
		stacks = append(stacks, flamegraph.Stack{Frames: frames, Count: s.Value[0] / div})
	}
	return Folded{Metric: p.Metric, Engine: p.Engine, Stacks: flamegraph.Sort(stacks)}
}

// javaName is a frame as Java source names it: java/lang/Thread.run is
// java.lang.Thread.run. Only a class's part changes (up to the last
// dot); a method name cannot hold a slash, and a native frame keeps its
// own.
func javaName(frame string) string {
	i := strings.LastIndexByte(frame, '.')
	if i <= 0 || !strings.Contains(frame[:i], "/") {
		return frame
	}
	return strings.ReplaceAll(frame[:i], "/", ".") + frame[i:]
}

// Total is the number of samples.
func (f Folded) Total() int64 {
	var t int64
	for _, s := range f.Stacks {
		t += s.Count
	}
	return t
}

// WriteCollapsed writes the stacks in the collapsed format
// (`frame;frame;frame count`, root first), with no heading: tools that
// read the format take every line for a stack.
func (f Folded) WriteCollapsed(w io.Writer) error {
	return flamegraph.WriteCollapsed(w, f.Stacks)
}

// DefaultFlat is how many methods WriteFlat lists when not told.
const DefaultFlat = 20

// WriteFlat writes the n methods (DefaultFlat if n <= 0) with the most
// self samples — the samples that stopped in them — as a text table,
// most first, under a heading that says what made the stacks.
func (f Folded) WriteFlat(w io.Writer, n int) error {
	if n <= 0 {
		n = DefaultFlat
	}
	self := map[string]int64{}
	for _, s := range f.Stacks {
		if len(s.Frames) > 0 {
			self[s.Frames[len(s.Frames)-1]] += s.Count
		}
	}
	type method struct {
		name string
		self int64
	}
	var ms []method
	for name, c := range self {
		ms = append(ms, method{name, c})
	}
	slices.SortFunc(ms, func(a, b method) int {
		if a.self != b.self {
			return cmp.Compare(b.self, a.self)
		}
		return strings.Compare(a.name, b.name)
	})
	total := f.Total()
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# %s\n", f.Engine)
	fmt.Fprintf(bw, "# %s: %d samples in %d stacks; the top %d of %d methods by self samples\n", f.Metric, total, len(f.Stacks), min(n, len(ms)), len(ms))
	fmt.Fprintf(bw, "%10s  %7s  %s\n", "samples", "percent", "method")
	for _, m := range ms[:min(n, len(ms))] {
		fmt.Fprintf(bw, "%10d  %6.2f%%  %s\n", m.self, 100*float64(m.self)/float64(total), flamegraph.CollapsedFrame(m.name))
	}
	return bw.Flush()
}

// WriteHTML draws the stacks as a flame graph, one self-contained HTML
// page (package flamegraph), titled with the metric and the engine.
func (f Folded) WriteHTML(w io.Writer) error {
	return flamegraph.WriteHTML(w, f.Stacks, flamegraph.Options{
		Title: fmt.Sprintf("%s flame graph: %d samples", f.Metric, f.Total()),
		Note:  f.Engine,
		Unit:  "samples",
	})
}
