package cniserver

import "net/http"

// OpenConns returns the number of connections the server holds open.
func (s *Server) OpenConns() int { return s.lim.open() }

// Evicted returns how many connections were closed to make room.
func (s *Server) Evicted() int64 { return s.lim.evicted.Load() }

// Mux is the server's router behind the peer check (fuzz tests call it in-process).
func (s *Server) Mux() http.Handler { return s.mux }

// RefusedPeers returns how many requests were refused for their caller's uid.
func (s *Server) RefusedPeers() int64 { return s.refusedPeers.Load() }
