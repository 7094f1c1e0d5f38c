package events

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/cockroachdb/errors"
)

// eventJSON is the JSON form of an Event (export/import, `coilctl events -o json`).
type eventJSON struct {
	Schema   uint32          `json:"schema"`
	Stream   Stream          `json:"stream"`
	Seq      uint64          `json:"seq"`
	Type     Type            `json:"type"`
	Time     string          `json:"time"`
	Actor    string          `json:"actor"`
	Prev     Hash            `json:"prev"`
	Hash     *Hash           `json:"hash,omitempty"`
	Revision int64           `json:"revision,omitempty"`
	Payload  json.RawMessage `json:"payload"`
}

// MarshalJSON encodes the event as
//
//	{"schema","stream","seq","type","time","actor","prev","hash","revision","payload":{...}}
//
// with time in RFC 3339 with nanoseconds in UTC and hashes in hex. The hash is left out
// when it is zero (an event not sealed yet), the revision when it is 0.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.Payload == nil {
		return nil, errors.Newf("events: %s #%d: JSON of an event without payload", e.Stream, e.Seq)
	}
	p, err := json.Marshal(e.Payload)
	if err != nil {
		return nil, errors.Wrapf(err, "events: %s #%d: payload", e.Stream, e.Seq)
	}
	j := eventJSON{
		Schema:   e.Schema,
		Stream:   e.Stream,
		Seq:      e.Seq,
		Type:     e.Type(),
		Time:     e.Time.UTC().Format(time.RFC3339Nano),
		Actor:    e.Actor,
		Prev:     e.Prev,
		Revision: e.Revision,
		Payload:  p,
	}
	if j.Schema == 0 {
		j.Schema = SchemaVersion
	}
	if !e.Hash.IsZero() {
		h := e.Hash
		j.Hash = &h
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the JSON form, re-creating the typed payload from "type". An
// unknown type returns ErrUnknownType, a newer schema ErrFutureSchema, unknown payload
// fields or bad values ErrCorrupt. When "hash" is present it must be the hash of the
// decoded event's canonical encoding (ErrCorrupt otherwise), so an imported event
// re-encodes to the exact bytes that were exported.
func (e *Event) UnmarshalJSON(b []byte) error {
	var j eventJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return errors.Wrapf(ErrCorrupt, "event JSON: %v", err)
	}
	where := string(j.Stream) + " #" + strconv.FormatUint(j.Seq, 10)
	if j.Schema > SchemaVersion {
		return errors.Wrapf(ErrFutureSchema, "%s: schema %d, this build reads up to %d: upgrade coil before importing", where, j.Schema, SchemaVersion)
	}
	if j.Schema == 0 {
		return errors.Wrapf(ErrCorrupt, "%s: schema missing or 0", where)
	}
	p := newPayload(j.Type)
	if p == nil {
		return errors.Wrapf(ErrUnknownType, "%s: %q: this build of coil does not know it", where, string(j.Type))
	}
	pd := json.NewDecoder(bytes.NewReader(j.Payload))
	pd.DisallowUnknownFields()
	if err := pd.Decode(p); err != nil {
		return errors.Wrapf(ErrCorrupt, "%s: %s payload: %v", where, j.Type, err)
	}
	t, err := time.Parse(time.RFC3339Nano, j.Time)
	if err != nil {
		return errors.Wrapf(ErrCorrupt, "%s: time: %v", where, err)
	}
	*e = Event{
		Schema:   j.Schema,
		Stream:   j.Stream,
		Seq:      j.Seq,
		Time:     t.UTC(),
		Actor:    j.Actor,
		Prev:     j.Prev,
		Payload:  p,
		Revision: j.Revision,
	}
	if j.Hash != nil {
		v, err := Encode(e)
		if err != nil {
			return errors.Wrapf(ErrCorrupt, "%s: %v", where, err)
		}
		if got := HashOf(e.Stream, e.Seq, v); got != *j.Hash {
			return errors.Wrapf(ErrCorrupt, "%s: hash %s does not match the event's content (%s)", where, short(*j.Hash), short(got))
		}
		e.Hash = *j.Hash
	}
	return nil
}
