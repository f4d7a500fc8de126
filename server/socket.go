package server

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// fileID tells one file from another at the same path.
type fileID struct{ dev, ino uint64 }

func idOf(path string) (*fileID, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, errors.New("no inode")
	}
	return &fileID{dev: uint64(st.Dev), ino: uint64(st.Ino)}, nil
}

// listenSocket listens on the unix socket path. A socket file left there
// by a server that died is replaced; one that another process still
// listens on is not (a connection to it is tried first), since taking it
// over would leave that server running but unreachable. The socket is
// removed at Shutdown only if it is still the one made here.
func (s *Server) listenSocket(path string) (net.Listener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("policy socket %s: the path exists and is not a socket; remove it or choose another --policy-socket", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("policy socket %s: another process is listening on it (a greyhold already running?); refusing to take it over: stop that one or choose another --policy-socket", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("policy socket %s: cannot tell whether another process listens on it: %w", path, err)
		}
		os.Remove(path) // left by a server that died
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("policy socket: %w", err)
	}
	// The file is removed by removeSocket, and only if it is still ours.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	// Postfix's smtpd runs as its own user: let the group in.
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("policy socket: %w", err)
	}
	id, err := idOf(path)
	if err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("policy socket %s: %w", path, err)
	}
	s.socketID = id
	return l, nil
}

// removeSocket removes the policy socket if the file at its path is still
// the one this server made: another server may have replaced it since.
func (s *Server) removeSocket() {
	if s.socketID == nil {
		return
	}
	if id, err := idOf(s.cfg.PolicySocket); err == nil && *id == *s.socketID {
		os.Remove(s.cfg.PolicySocket)
	} else if err == nil {
		s.log.Warn("the policy socket's path holds another socket now; leaving it in place", "path", s.cfg.PolicySocket)
	}
	s.socketID = nil
}
