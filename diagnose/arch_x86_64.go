package diagnose

import "encoding/binary"

// archX8664: the calls a blocked thread is commonly in, by x86-64 number
// (arch/x86/entry/syscalls/syscall_64.tbl).
var archX8664 = arch{
	name: "x86-64", ptrSize: 8, order: binary.LittleEndian, futex: 202,
	syscalls: []syscallRow{
		{0, "read"}, {1, "write"}, {7, "poll"}, {23, "select"}, {34, "pause"}, {35, "nanosleep"},
		{43, "accept"}, {44, "sendto"}, {45, "recvfrom"}, {61, "wait4"}, {202, "futex"},
		{219, "restart_syscall"}, {230, "clock_nanosleep"}, {232, "epoll_wait"}, {271, "ppoll"},
		{281, "epoll_pwait"}, {288, "accept4"}, {441, "epoll_pwait2"},
	},
}
