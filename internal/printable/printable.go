package printable

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const hex = "0123456789abcdef"

// String returns s with its control characters other than '\n' and '\t'
// and its invalid UTF-8 escaped; s itself when there are none.
func String(s string) string { return escape(s, false) }

// Line is String for a place that holds one line (a log attribute, an
// error message, a thread's name): '\n' is escaped too.
func Line(s string) string { return escape(s, true) }

func escape(s string, line bool) string {
	i := clean(s, line)
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 16)
	escapeFrom(&b, s, i, line)
	return b.String()
}

// sink is what escaped text is built in (a strings.Builder for String, a
// bytes.Buffer for Writer).
type sink interface {
	WriteByte(byte) error
	WriteString(string) (int, error)
}

// escapeFrom writes s escaped to b, given that s[:i] needs no escape.
func escapeFrom(b sink, s string, i int, line bool) {
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		writeEscape(b, r, s[i])
		i += size
		j := i + clean(s[i:], line)
		b.WriteString(s[i:j])
		i = j
	}
}

// clean is the length of s's leading run that needs no escape.
func clean(s string, line bool) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && (c != '\n' || line) || c == 0x7f {
				return i
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if size == 1 || isC1(r) || invisible(r) { // one byte above ASCII: not UTF-8
			return i
		}
		i += size
	}
	return len(s)
}

func isC1(r rune) bool { return r >= 0x80 && r <= 0x9f }

// invisible reports a character that changes how the text around it is
// shown without being seen: format characters (bidi overrides and
// isolates that reorder a line, zero-width spaces and joiners, the byte
// order mark, tag characters) and the Unicode line and paragraph
// separators. A target's text can use them to make a log line read as
// something else.
func invisible(r rune) bool {
	return r != 0xad && (unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Zl, r) || unicode.Is(unicode.Zp, r)) // a soft hyphen only breaks a word
}

// writeEscape writes the escape of the rune r decoded at a byte b: a C1
// control as \u00NN (the character, as Go and JSON spell it, since its
// two bytes are valid UTF-8), anything else — a C0 control, DEL, a byte
// that is not UTF-8 — as \xNN.
func writeEscape(b sink, r rune, c byte) {
	switch {
	case r > 0xffff && r != utf8.RuneError:
		b.WriteString(`\U`)
		for shift := 28; shift >= 0; shift -= 4 {
			b.WriteByte(hex[r>>shift&0xf])
		}
		return
	case r > 0x9f && r != utf8.RuneError:
		b.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hex[r>>shift&0xf])
		}
		return
	case isC1(r):
		b.WriteString(`\u00`)
		c = byte(r)
	default:
		b.WriteString(`\x`)
	}
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}
