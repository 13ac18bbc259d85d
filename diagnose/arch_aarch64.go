package diagnose

import "encoding/binary"

// archAArch64: the same calls by arm64 number (the generic table,
// include/uapi/asm-generic/unistd.h). arm64 has no poll, select, pause or
// epoll_wait: glibc uses ppoll, pselect6, ppoll and epoll_pwait.
var archAArch64 = arch{
	name: "aarch64", ptrSize: 8, order: binary.LittleEndian, futex: 98,
	syscalls: []syscallRow{
		{63, "read"}, {64, "write"}, {73, "ppoll"}, {72, "pselect6"}, {101, "nanosleep"},
		{202, "accept"}, {206, "sendto"}, {207, "recvfrom"}, {260, "wait4"}, {98, "futex"},
		{128, "restart_syscall"}, {115, "clock_nanosleep"}, {22, "epoll_pwait"},
		{242, "accept4"}, {441, "epoll_pwait2"},
	},
}
