package flamegraph

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Stack is one folded stack: the frames from the root (a thread's first
// frame) to the leaf (the frame that was running), and how many samples
// ended in it.
type Stack struct {
	Frames []string
	Count  int64
}

// MaxTotal is the largest sum of counts drawn: the page's script counts
// in floating point, exact up to 2^53.
const MaxTotal = 1 << 53

// maxLine bounds one line of collapsed input: a stack of a few thousand
// frames of a few hundred bytes each.
const maxLine = 4 << 20

// ParseCollapsed reads collapsed stacks, one `frame;frame;frame count`
// line each; blank lines are skipped. A line without a whole, positive
// count after its last space is an error that names the line.
func ParseCollapsed(r io.Reader) ([]Stack, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, maxLine)
	var stacks []Stack
	var total int64
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimRight(sc.Text(), " \t\r")
		if text == "" {
			continue
		}
		i := strings.LastIndexByte(text, ' ')
		if i < 0 {
			return nil, fmt.Errorf("collapsed stacks, line %d: no count after the stack", line)
		}
		n, err := strconv.ParseInt(text[i+1:], 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("collapsed stacks, line %d: the count %q is not a positive whole number", line, text[i+1:])
		}
		if total += n; total > MaxTotal || total < 0 {
			return nil, fmt.Errorf("collapsed stacks, line %d: the counts add up to more than %d", line, int64(MaxTotal))
		}
		frames := strings.TrimRight(text[:i], " \t")
		stacks = append(stacks, Stack{Frames: strings.Split(frames, ";"), Count: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("collapsed stacks: %w", err)
	}
	return stacks, nil
}

// WriteCollapsed writes stacks in the collapsed format, one line each,
// in the order given. A frame name holding the format's separators —
// a semicolon, a line break, any control character — would split into
// frames or lines that were never sampled: those characters are written
// as '?'.
func WriteCollapsed(w io.Writer, stacks []Stack) error {
	bw := bufio.NewWriter(w)
	for _, s := range stacks {
		for i, f := range s.Frames {
			if i > 0 {
				bw.WriteByte(';')
			}
			bw.WriteString(CollapsedFrame(f))
		}
		bw.WriteByte(' ')
		bw.WriteString(strconv.FormatInt(s.Count, 10))
		bw.WriteByte('\n')
	}
	return bw.Flush()
}

// CollapsedFrame is name as one frame of a collapsed line can hold it.
func CollapsedFrame(name string) string {
	if !strings.ContainsFunc(name, unsafeInCollapsed) {
		return name
	}
	return strings.Map(func(r rune) rune {
		if unsafeInCollapsed(r) {
			return '?'
		}
		return r
	}, name)
}

func unsafeInCollapsed(r rune) bool {
	return r == ';' || r < 0x20 || r == 0x7f || r == 0x85 || r == 0x2028 || r == 0x2029
}

// Sort orders stacks by their frames, as a reader of collapsed output
// expects (callers together), and merges equal ones.
func Sort(stacks []Stack) []Stack {
	slices.SortFunc(stacks, func(a, b Stack) int { return slices.Compare(a.Frames, b.Frames) })
	out := stacks[:0]
	for _, s := range stacks {
		if n := len(out); n > 0 && slices.Equal(out[n-1].Frames, s.Frames) {
			out[n-1].Count = satAdd(out[n-1].Count, s.Count)
			continue
		}
		out = append(out, s)
	}
	return out
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
