package printable

import (
	"bytes"
	"io"
	"unicode/utf8"
	"unsafe"
)

// Writer escapes what is written through it as String does, for text
// that arrives in pieces (a profile streamed from the target to a
// terminal): a UTF-8 character split between two writes is held back
// until its end comes, so it is passed on whole rather than escaped as
// two broken halves. An escape needs no such care: every control
// character is escaped on its own, wherever the sequence it starts is
// cut. Close writes out what is held back at the end.
type Writer struct {
	w io.Writer
	// held is the start of a character that the last write ended in.
	held  [utf8.UTFMax]byte
	nheld int
	buf   bytes.Buffer
}

// NewWriter returns a Writer escaping into w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// Write escapes p into the underlying writer and reports all of p
// written, unless the underlying writer failed.
func (w *Writer) Write(p []byte) (int, error) {
	in := p
	if w.nheld > 0 {
		// Rare (a character cut by a read's buffer): the copy costs
		// nothing on the common path.
		in = append(w.held[:w.nheld:w.nheld], p...)
		w.nheld = 0
	}
	s := view(in)
	keep := incompleteTail(s)
	s = s[:len(s)-keep]
	i := clean(s, false)
	var err error
	if i == len(s) {
		err = w.emit(in[:len(s)])
	} else {
		w.buf.Reset()
		escapeFrom(&w.buf, s, i, false)
		err = w.emit(w.buf.Bytes())
	}
	if err != nil {
		return 0, err
	}
	w.nheld = copy(w.held[:], in[len(s):])
	return len(p), nil
}

// Close writes what the last write held back — the start of a character
// whose end never came — escaped as the broken UTF-8 it is. It does not
// close the underlying writer.
func (w *Writer) Close() error {
	if w.nheld == 0 {
		return nil
	}
	s := string(w.held[:w.nheld])
	w.nheld = 0
	w.buf.Reset()
	escapeFrom(&w.buf, s, 0, false)
	return w.emit(w.buf.Bytes())
}

func (w *Writer) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := w.w.Write(b)
	if err == nil && n < len(b) {
		err = io.ErrShortWrite
	}
	return err
}

// view is b as a string without a copy, for the scan of one Write: b is
// neither kept nor changed while the string is in use.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// incompleteTail is how many bytes at the end of s begin a UTF-8
// character that is not complete yet (0 to 3).
func incompleteTail(s string) int {
	for k := 1; k < utf8.UTFMax && k <= len(s); k++ {
		c := s[len(s)-k]
		switch {
		case c < utf8.RuneSelf:
			return 0
		case utf8.RuneStart(c):
			if utf8.FullRuneInString(s[len(s)-k:]) {
				return 0
			}
			return k
		}
	}
	return 0
}
