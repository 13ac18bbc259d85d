package printable

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ name, in, want, line string }{
		{"plain", "Profiling started", "Profiling started", ""},
		{"empty", "", "", ""},
		{"newline and tab kept", "a\tb\nc", "a\tb\nc", `a` + "\t" + `b\x0ac`},
		{"unicode kept", "héllo 世界 🙂 Ω", "héllo 世界 🙂 Ω", ""},
		{"backslash kept", `C:\x1b is text`, `C:\x1b is text`, ""},
		{"ESC", "a\x1bb", `a\x1bb`, ""},
		{"OSC 52", "\x1b]52;c;cm0gLXJmIH4K\x07", `\x1b]52;c;cm0gLXJmIH4K\x07`, ""},
		{"OSC 0 with ST", "\x1b]0;pwned\x1b\\", `\x1b]0;pwned\x1b\`, ""},
		{"colour", "\x1b[31mred\x1b[0m", `\x1b[31mred\x1b[0m`, ""},
		{"CRLF", "line\r\n", `line\x0d` + "\n", `line\x0d\x0a`},
		{"NUL and BEL", "\x00\a", `\x00\x07`, ""},
		{"DEL", "x\x7fy", `x\x7fy`, ""},
		{"C1 CSI", "a\u009b31mb", `a\u009b31mb`, ""},
		{"C1 range ends", "\u0080\u009f\u00a0", `\u0080\u009f` + "\u00a0", ""},
		{"invalid byte", "a\xffb", `a\xffb`, ""},
		{"lone 8-bit CSI", "\x9b31m", `\x9b31m`, ""},
		{"truncated rune", "ok\xe4\xb8", `ok\xe4\xb8`, ""},
		{"overlong", "\xc0\xaf", `\xc0\xaf`, ""},
		{"surrogate", "\xed\xa0\x80", `\xed\xa0\x80`, ""},
		{"bidi override", "evil\u202egnp.exe", `evil\u202egnp.exe`, ""},
		{"bidi isolates", "\u2066a\u2069", `\u2066a\u2069`, ""},
		{"zero width", "ad\u200bmin\ufeff", `ad\u200bmin\ufeff`, ""},
		{"line separator", "a\u2028b\u2029c", `a\u2028b\u2029c`, ""},
		{"tag character", "x\U000e0041", `x\U000e0041`, ""},
		{"arabic letter mark", "a\u061cb", `a\u061cb`, ""},
		{"soft hyphen kept", "co\u00adop", "co\u00adop", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := String(tc.in); got != tc.want {
				t.Errorf("String(%q) = %q, want %q", tc.in, got, tc.want)
			}
			wantLine := tc.line
			if wantLine == "" {
				wantLine = tc.want
			}
			if got := Line(tc.in); got != wantLine {
				t.Errorf("Line(%q) = %q, want %q", tc.in, got, wantLine)
			}
		})
	}
}

func TestCleanTextIsNotCopied(t *testing.T) {
	s := strings.Repeat("java.lang.Thread.run;Target.churn [itimer] 42\n\tZürich\n", 100)
	if n := testing.AllocsPerRun(100, func() { String(s) }); n != 0 {
		t.Errorf("String of clean text: %v allocations", n)
	}
	w := NewWriter(io.Discard)
	p := []byte(s)
	if n := testing.AllocsPerRun(100, func() { w.Write(p) }); n != 0 {
		t.Errorf("Writer of clean text: %v allocations", n)
	}
}

// writeSplit writes s through a Writer in pieces cut at cuts.
func writeSplit(t testing.TB, s string, cuts ...int) string {
	t.Helper()
	var out bytes.Buffer
	w := NewWriter(&out)
	last := 0
	for _, c := range append(cuts, len(s)) {
		n, err := w.Write([]byte(s[last:c]))
		if err != nil || n != c-last {
			t.Fatalf("Write(%q) = %d, %v", s[last:c], n, err)
		}
		last = c
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

func TestWriterAcrossWrites(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		cuts           []int
	}{
		{"rune cut in two", "a世b", "a世b", []int{2}},
		{"rune cut in three", "a世b", "a世b", []int{2, 3}},
		{"4-byte rune cut everywhere", "🙂", "🙂", []int{1, 2, 3}},
		{"C1 cut", "a\u009bb", `a\u009bb`, []int{2}},
		{"OSC 52 cut after ESC", "x\x1b]52;c;aGk=\x07y", `x\x1b]52;c;aGk=\x07y`, []int{2}},
		{"OSC cut before ESC", "x\x1b]0;t\x07", `x\x1b]0;t\x07`, []int{1, 5}},
		{"CR cut from LF", "a\r\nb", `a\x0d` + "\nb", []int{2}},
		{"broken rune then ASCII", "\xe4\xb8x", `\xe4\xb8x`, []int{2}},
		{"ends inside a rune", "ok\xf0\x9f", `ok\xf0\x9f`, []int{3}},
		{"empty writes", "a世", "a世", []int{0, 1, 1, 2, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := writeSplit(t, tc.in, tc.cuts...); got != tc.want {
				t.Errorf("written in pieces at %v: %q, want %q", tc.cuts, got, tc.want)
			}
			if got := String(tc.in); got != tc.want {
				t.Errorf("String: %q, want %q", got, tc.want)
			}
		})
	}
}

// failing fails every write.
type failing struct{}

func (failing) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

func TestWriterReportsFailure(t *testing.T) {
	w := NewWriter(failing{})
	if n, err := w.Write([]byte("a\x1b")); err != io.ErrClosedPipe || n != 0 {
		t.Errorf("Write = %d, %v", n, err)
	}
}

// checkPrintable fails unless out is what a terminal can only show.
func checkPrintable(t *testing.T, in, out string, line bool) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Fatalf("%q -> %q: not UTF-8", in, out)
	}
	for _, r := range out {
		if r < 0x20 && r != '\t' && (r != '\n' || line) || r >= 0x7f && r <= 0x9f {
			t.Fatalf("%q -> %q: control %U left", in, out, r)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"plain", "\x1b]52;c;aGk=\x07", "a\u009bb\xff", "世界\r\n", "\xf0\x9f\x99"} {
		f.Add(s, uint8(3), uint8(7))
	}
	f.Fuzz(func(t *testing.T, s string, cut1, cut2 uint8) {
		out := String(s)
		checkPrintable(t, s, out, false)
		checkPrintable(t, s, Line(s), true)
		if again := String(out); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", s, out, again)
		}
		if clean(s, false) == len(s) && out != s {
			t.Fatalf("clean %q changed to %q", s, out)
		}
		if strings.Count(out, "\n") != strings.Count(s, "\n") {
			t.Fatalf("%q -> %q: lines changed", s, out)
		}
		a, b := min(int(cut1), len(s)), min(int(cut2), len(s))
		if got := writeSplit(t, s, min(a, b), max(a, b)); got != out {
			t.Fatalf("%q written cut at %d and %d: %q, String gives %q", s, a, b, got, out)
		}
	})
}
