// Package safefile reads files that come from someone else — agent
// libraries, operator rule files, files inside a target's root — as
// hostile input: each is opened once without blocking (a FIFO or a device
// cannot stall the open), rejected unless it is a regular file, checked
// against a size cap before a byte is read, and read from that same open
// file. Every call runs under the caller's context, so a file system that
// hangs (a dead NFS server, a stuck FUSE daemon) costs the caller its
// deadline and no more.
package safefile
