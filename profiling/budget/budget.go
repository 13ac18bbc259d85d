package budget

import (
	"errors"
	"fmt"
	"sync"
)

var (
	// ErrExhausted: the shared budget cannot hold this much more now.
	ErrExhausted = errors.New("memory budget exhausted")
	// ErrTooLarge: more than one Buffer may hold.
	ErrTooLarge = errors.New("larger than one buffer may hold")
)

// Budget is a number of bytes that Buffers draw on. Safe for concurrent
// use.
type Budget struct {
	mu          sync.Mutex
	total, used int64
}

// New returns a budget of total bytes.
func New(total int64) *Budget { return &Budget{total: total} }

// Total is the budget's size.
func (b *Budget) Total() int64 { return b.total }

// Used is what Buffers hold now.
func (b *Budget) Used() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}

func (b *Budget) take(n int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n > b.total-b.used {
		return fmt.Errorf("%w: %d bytes asked, %d of %d free", ErrExhausted, n, b.total-b.used, b.total)
	}
	b.used += n
	return nil
}

func (b *Budget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	b.mu.Unlock()
}

// Buffer returns an empty buffer that may hold at most max bytes, drawn
// from b as it grows.
func (b *Budget) Buffer(max int64) *Buffer { return &Buffer{b: b, max: max} }

// Buffer is an io.Writer whose memory is charged to a Budget. A write
// that would take it past its own max fails with ErrTooLarge, one the
// budget cannot cover with ErrExhausted; nothing is allocated for either.
// Release it when done (after which Bytes must no longer be used).
type Buffer struct {
	b       *Budget
	max     int64
	data    []byte
	charged int64
}

// Reserve grows the buffer to hold n more bytes at once: a reader that
// knows the size (a file's fstat) asks for it before reading a byte.
func (w *Buffer) Reserve(n int64) error {
	need := int64(len(w.data)) + n
	if need > w.max {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, need, w.max)
	}
	if need <= int64(cap(w.data)) {
		return nil
	}
	if err := w.b.take(need - w.charged); err != nil {
		return err
	}
	grown := make([]byte, len(w.data), need)
	copy(grown, w.data)
	w.data, w.charged = grown, need
	return nil
}

// Write appends p, growing by doubling within max and the budget.
func (w *Buffer) Write(p []byte) (int, error) {
	if need := int64(len(w.data) + len(p)); need > int64(cap(w.data)) {
		want := min(max(int64(cap(w.data))*2, need, 4096), w.max)
		if want < need || w.Reserve(want-int64(len(w.data))) != nil {
			// Doubling may ask for more than is left: try for exactly p.
			if err := w.Reserve(int64(len(p))); err != nil {
				return 0, err
			}
		}
	}
	w.data = append(w.data, p...)
	return len(p), nil
}

// Bytes is what was written.
func (w *Buffer) Bytes() []byte { return w.data }

// Len is how many bytes were written.
func (w *Buffer) Len() int { return len(w.data) }

// Release returns the buffer's memory to the budget. It is idempotent.
func (w *Buffer) Release() {
	if w == nil || w.charged == 0 {
		return
	}
	w.b.give(w.charged)
	w.data, w.charged = nil, 0
}
