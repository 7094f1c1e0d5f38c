package cniserver

// OpenConns returns the number of connections the server holds open.
func (s *Server) OpenConns() int { return s.lim.open() }

// Evicted returns how many connections were closed to make room.
func (s *Server) Evicted() int64 { return s.lim.evicted.Load() }
