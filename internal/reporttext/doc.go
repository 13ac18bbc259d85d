// Package reporttext writes an inspection report (preflight.Report) as
// the text safeattach inspect and kubectl safeattach inspect print: one
// line per area, the evidence under it.
package reporttext
