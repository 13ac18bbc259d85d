// Package outfile writes a profile where the user asked on this machine,
// as asprof users expect it named (%p, %t, %n{MAX}) and without surprises:
// the destination must be absent or a regular file (a symlink, device or
// FIFO there is refused, never replaced), the data goes to a temporary
// file beside it with a random name, and replaces the destination only
// once complete — a full disk or an interrupted run leaves what was
// there before.
package outfile
