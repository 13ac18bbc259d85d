package fleet

import "github.com/safeattach/safeattach/internal/printable"

// logValue is a value a pod's author wrote (an annotation), as logged:
// cut, and printable. slog's JSON handler escapes C0 controls but writes
// C1 controls (an 8-bit CSI) and DEL as they are, and a terminal tailing
// the log obeys them.
func logValue(s string) string { return printable.Line(truncate(s, 80)) }

// logText is an error as logged: its text can quote the target (a path
// it maps, a name it chose), escaped for the same reason.
func logText(err error) string { return printable.Line(err.Error()) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
