package logio

import (
	"encoding/hex"
	"net/netip"
	"time"

	"github.com/coil-net/coil/events"
)

// fastDecode decodes the common event lines (AddressAssigned and AddressReleased, plain
// ASCII strings without escapes) without reflection. It returns ok=false for anything
// else, and the caller falls back to events.Event.UnmarshalJSON, which defines the
// format; so does a fast decode whose re-encoded bytes do not hash to the line's "hash"
// (the fallback then reports the error in its words). A fast decode can therefore only
// accept an event the full decoder would accept with the same content. It returns the
// event's canonical encoding too.
func fastDecode(line []byte) (*events.Event, []byte, bool) {
	l := lexer{b: line}
	if !l.next('{') {
		return nil, nil, false
	}
	e := &events.Event{}
	var typ string
	var hash events.Hash
	var hasHash, hasSchema, hasTime bool
	for first := true; ; first = false {
		if l.next('}') {
			break
		}
		if !first && !l.next(',') {
			return nil, nil, false
		}
		key, ok := l.str()
		if !ok || !l.next(':') {
			return nil, nil, false
		}
		switch key {
		case "schema":
			v, good := l.uint()
			if !good || v != events.SchemaVersion {
				return nil, nil, false
			}
			e.Schema, hasSchema = uint32(v), true
		case "stream":
			s, good := l.str()
			if !good {
				return nil, nil, false
			}
			e.Stream = events.Stream(s)
		case "seq":
			if e.Seq, ok = l.uint(); !ok {
				return nil, nil, false
			}
		case "type":
			if typ, ok = l.str(); !ok {
				return nil, nil, false
			}
		case "time":
			s, good := l.str()
			if !good {
				return nil, nil, false
			}
			t, err := time.Parse(time.RFC3339Nano, s)
			if err != nil {
				return nil, nil, false
			}
			e.Time, hasTime = t.UTC(), true
		case "actor":
			if e.Actor, ok = l.str(); !ok {
				return nil, nil, false
			}
		case "prev":
			if !l.hash(&e.Prev) {
				return nil, nil, false
			}
		case "hash":
			if !l.hash(&hash) {
				return nil, nil, false
			}
			hasHash = true
		case "revision":
			v, good := l.uint()
			if !good {
				return nil, nil, false
			}
			e.Revision = int64(v)
		case "payload":
			var p events.Payload
			switch events.Type(typ) {
			case events.TypeAddressAssigned:
				p, ok = l.assigned()
			case events.TypeAddressReleased:
				p, ok = l.released()
			default:
				return nil, nil, false
			}
			if !ok {
				return nil, nil, false
			}
			e.Payload = p
		default:
			return nil, nil, false
		}
	}
	l.ws()
	if l.i != len(l.b) || !hasHash || !hasSchema || !hasTime || e.Payload == nil || e.Payload.EventType() != events.Type(typ) {
		return nil, nil, false
	}
	v, err := events.Encode(e)
	if err != nil || events.HashOf(e.Stream, e.Seq, v) != hash {
		return nil, nil, false
	}
	e.Hash = hash
	return e, v, true
}

type lexer struct {
	b []byte
	i int
}

func (l *lexer) ws() {
	for l.i < len(l.b) {
		switch l.b[l.i] {
		case ' ', '\t', '\n', '\r':
			l.i++
		default:
			return
		}
	}
}

func (l *lexer) next(c byte) bool {
	l.ws()
	if l.i < len(l.b) && l.b[l.i] == c {
		l.i++
		return true
	}
	return false
}

// str reads a string of printable ASCII without escapes.
func (l *lexer) str() (string, bool) {
	if !l.next('"') {
		return "", false
	}
	start := l.i
	for l.i < len(l.b) {
		c := l.b[l.i]
		switch {
		case c == '"':
			s := string(l.b[start:l.i])
			l.i++
			return s, true
		case c < 0x20 || c >= 0x80 || c == '\\':
			return "", false
		}
		l.i++
	}
	return "", false
}

func (l *lexer) uint() (uint64, bool) {
	l.ws()
	start := l.i
	var v uint64
	for l.i < len(l.b) && l.b[l.i] >= '0' && l.b[l.i] <= '9' {
		d := uint64(l.b[l.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = v*10 + d
		l.i++
	}
	n := l.i - start
	if n == 0 || (n > 1 && l.b[start] == '0') {
		return 0, false
	}
	return v, true
}

func (l *lexer) hash(h *events.Hash) bool {
	s, ok := l.str()
	if !ok || len(s) != 2*len(h) {
		return false
	}
	_, err := hex.Decode(h[:], []byte(s))
	return err == nil
}

func (l *lexer) addrs() ([]netip.Addr, bool) {
	if !l.next('[') {
		return nil, false
	}
	var out []netip.Addr
	for first := true; ; first = false {
		if l.next(']') {
			return out, true
		}
		if !first && !l.next(',') {
			return nil, false
		}
		s, ok := l.str()
		if !ok {
			return nil, false
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, false
		}
		out = append(out, a)
	}
}

// object reads a flat object, calling field for each key.
func (l *lexer) object(field func(key string) bool) bool {
	if !l.next('{') {
		return false
	}
	for first := true; ; first = false {
		if l.next('}') {
			return true
		}
		if !first && !l.next(',') {
			return false
		}
		key, ok := l.str()
		if !ok || !l.next(':') || !field(key) {
			return false
		}
	}
}

func (l *lexer) u64(dst *uint64) bool {
	v, ok := l.uint()
	*dst = v
	return ok
}

func (l *lexer) strTo(dst *string) bool {
	s, ok := l.str()
	*dst = s
	return ok
}

func (l *lexer) assigned() (events.Payload, bool) {
	p := &events.AddressAssigned{}
	ok := l.object(func(key string) bool {
		switch key {
		case "containerID":
			return l.strTo(&p.ContainerID)
		case "ifName":
			return l.strTo(&p.IfName)
		case "podNamespace":
			return l.strTo(&p.PodNamespace)
		case "podName":
			return l.strTo(&p.PodName)
		case "podUID":
			return l.strTo(&p.PodUID)
		case "pool":
			return l.strTo(&p.Pool)
		case "block":
			return l.u64(&p.Block)
		case "addrs":
			var ok bool
			p.Addrs, ok = l.addrs()
			return ok
		}
		return false
	})
	return p, ok
}

func (l *lexer) released() (events.Payload, bool) {
	p := &events.AddressReleased{}
	ok := l.object(func(key string) bool {
		switch key {
		case "containerID":
			return l.strTo(&p.ContainerID)
		case "ifName":
			return l.strTo(&p.IfName)
		case "pool":
			return l.strTo(&p.Pool)
		case "block":
			return l.u64(&p.Block)
		case "reason":
			return l.strTo(&p.Reason)
		case "addrs":
			var ok bool
			p.Addrs, ok = l.addrs()
			return ok
		}
		return false
	})
	return p, ok
}
