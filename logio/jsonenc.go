package logio

import (
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"

	"github.com/coil-net/coil/events"
)

// appendEventJSON appends the JSON form of e, byte for byte what e.MarshalJSON returns
// (TestAppendEventJSON checks it), without reflection on the envelope: export's hot path.
func appendEventJSON(b []byte, e *events.Event) ([]byte, error) {
	if e.Payload == nil {
		return nil, errors.Newf("logio: %s #%d: event without payload", e.Stream, e.Seq)
	}
	var p []byte
	switch pl := e.Payload.(type) {
	case *events.AddressAssigned:
		p = appendAssigned(make([]byte, 0, 256), pl)
	case *events.AddressReleased:
		p = appendReleased(make([]byte, 0, 256), pl)
	default:
		var err error
		if p, err = json.Marshal(e.Payload); err != nil {
			return nil, errors.Wrapf(err, "logio: %s #%d: payload", e.Stream, e.Seq)
		}
	}
	schema := e.Schema
	if schema == 0 {
		schema = events.SchemaVersion
	}
	b = append(b, `{"schema":`...)
	b = strconv.AppendUint(b, uint64(schema), 10)
	b = append(b, `,"stream":`...)
	b = appendString(b, string(e.Stream))
	b = append(b, `,"seq":`...)
	b = strconv.AppendUint(b, e.Seq, 10)
	b = append(b, `,"type":`...)
	b = appendString(b, string(e.Type()))
	b = append(b, `,"time":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","actor":`...)
	b = appendString(b, e.Actor)
	b = append(b, `,"prev":"`...)
	b = hex.AppendEncode(b, e.Prev[:])
	b = append(b, '"')
	if !e.Hash.IsZero() {
		b = append(b, `,"hash":"`...)
		b = hex.AppendEncode(b, e.Hash[:])
		b = append(b, '"')
	}
	if e.Revision != 0 {
		b = append(b, `,"revision":`...)
		b = strconv.AppendInt(b, e.Revision, 10)
	}
	b = append(b, `,"payload":`...)
	b = append(b, p...)
	return append(b, '}'), nil
}

// appendString appends s as a JSON string the way encoding/json writes it: plain ASCII
// directly, anything that needs escaping through encoding/json itself.
func appendString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendAssigned and appendReleased write the payloads as encoding/json does (field
// order and omitempty of their struct tags).
func appendAssigned(b []byte, p *events.AddressAssigned) []byte {
	b = append(b, `{"containerID":`...)
	b = appendString(b, p.ContainerID)
	b = append(b, `,"ifName":`...)
	b = appendString(b, p.IfName)
	if p.PodNamespace != "" {
		b = append(b, `,"podNamespace":`...)
		b = appendString(b, p.PodNamespace)
	}
	if p.PodName != "" {
		b = append(b, `,"podName":`...)
		b = appendString(b, p.PodName)
	}
	if p.PodUID != "" {
		b = append(b, `,"podUID":`...)
		b = appendString(b, p.PodUID)
	}
	b = append(b, `,"pool":`...)
	b = appendString(b, p.Pool)
	b = append(b, `,"block":`...)
	b = strconv.AppendUint(b, p.Block, 10)
	b = append(b, `,"addrs":`...)
	b = appendAddrs(b, p.Addrs)
	return append(b, '}')
}

func appendReleased(b []byte, p *events.AddressReleased) []byte {
	b = append(b, `{"containerID":`...)
	b = appendString(b, p.ContainerID)
	b = append(b, `,"ifName":`...)
	b = appendString(b, p.IfName)
	b = append(b, `,"pool":`...)
	b = appendString(b, p.Pool)
	b = append(b, `,"block":`...)
	b = strconv.AppendUint(b, p.Block, 10)
	b = append(b, `,"addrs":`...)
	b = appendAddrs(b, p.Addrs)
	if p.Reason != "" {
		b = append(b, `,"reason":`...)
		b = appendString(b, p.Reason)
	}
	return append(b, '}')
}

func appendAddrs(b []byte, as []netip.Addr) []byte {
	if as == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, a := range as {
		if i > 0 {
			b = append(b, ',')
		}
		t, _ := a.MarshalText()
		b = appendString(b, string(t))
	}
	return append(b, ']')
}
