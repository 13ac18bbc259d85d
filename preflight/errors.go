package preflight

import "errors"

// ErrNotFound is returned when the pid names no process.
var ErrNotFound = errors.New("no such process")

// ErrPermission is returned when the process exists but the caller may not
// read even its status.
var ErrPermission = errors.New("permission denied")
