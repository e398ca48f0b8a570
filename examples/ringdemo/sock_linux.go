package main

import (
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// socketpair returns a connected pair of Unix stream sockets as files.
func socketpair() ([2]*os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return [2]*os.File{}, err
	}
	return [2]*os.File{os.NewFile(uintptr(fds[0]), "parent"), os.NewFile(uintptr(fds[1]), "child")}, nil
}

// fileConn turns a socket file into a *net.UnixConn and closes the file.
func fileConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	return c.(*net.UnixConn), nil
}
