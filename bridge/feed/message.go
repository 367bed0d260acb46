package feed

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/wa-sidecar/wa-sidecar/procmon"
)

// Protocol is the version a hello message announces. It changes only when
// an existing client would misread the messages; new fields do not count.
const Protocol = 1

// The message types the server sends.
const (
	TypeHello  = "hello"
	TypeEvent  = "event"
	TypeResult = "result"
)

// The ops a client may send. Restart, stop and start need the token.
const (
	OpRestart = "restart"
	OpStop    = "stop"
	OpStart   = "start"
	OpStatus  = "status"
	OpPing    = "ping"
)

var ops = []string{OpRestart, OpStop, OpStart, OpStatus, OpPing}

// maxIDBytes bounds the id a client may attach to an op; it is echoed back.
const maxIDBytes = 128

// Sidecar identifies the sidecar process in a hello.
type Sidecar struct {
	Version string `json:"version"`
	Pid     int    `json:"pid"`
}

// hello is the first message on every connection.
type hello struct {
	Type     string          `json:"type"`
	Protocol int             `json:"protocol"`
	Sidecar  Sidecar         `json:"sidecar"`
	Seq      uint64          `json:"seq"`
	Control  bool            `json:"control"`
	Status   json.RawMessage `json:"status"`
	// QR is the latest qr event, as a token holder received it, while the
	// bridge waits for its code to be scanned; only for token holders.
	QR json.RawMessage `json:"qr,omitempty"`
}

// Result answers one op.
type Result struct {
	Type  string          `json:"type"`
	ID    json.RawMessage `json:"id"`
	OK    bool            `json:"ok"`
	Error string          `json:"error,omitempty"`
	// Status is the snapshot after the op, sent for status and for
	// control ops that succeeded.
	Status *procmon.Status `json:"status,omitempty"`
}

// Op is one request from a client.
type Op struct {
	Op string
	// ID is echoed in the result as it came: a JSON string or number, or
	// nil when the client sent none.
	ID json.RawMessage
}

// DecodeOp parses one op message. On error the returned Op still carries
// the id when it could be read, so the error result can name it.
func DecodeOp(b []byte) (Op, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return Op{}, errors.New(`message is not a JSON object; send e.g. {"op":"status","id":"1"}`)
	}
	var op Op
	if id, ok := raw["id"]; ok {
		id = bytes.TrimSpace(id)
		switch {
		case len(id) > maxIDBytes:
			return op, fmt.Errorf(`"id" is longer than %d bytes`, maxIDBytes)
		case len(id) > 0 && (id[0] == '"' || id[0] == '-' || (id[0] >= '0' && id[0] <= '9')):
			op.ID = slices.Clone(id)
		case string(id) == "null":
		default:
			return op, errors.New(`"id" must be a string or a number`)
		}
	}
	name, ok := raw["op"]
	if !ok {
		return op, fmt.Errorf(`missing "op"; use one of %q`, ops)
	}
	if err := json.Unmarshal(name, &op.Op); err != nil {
		return op, fmt.Errorf(`"op" must be a string, one of %q`, ops)
	}
	if !slices.Contains(ops, op.Op) {
		return op, fmt.Errorf("unknown op %q; use one of %q", op.Op, ops)
	}
	return op, nil
}

// reserved are the names of an event's own fields. Fields a layer above
// adds (Event.Data and Event.Private) never replace them.
var reserved = map[string]bool{
	"type": true, "seq": true, "at": true, "event": true, "status": true,
	"pid": true, "code": true, "signal": true, "returncode": true, "core_dumped": true,
	"class": true, "requested": true, "uptime_ms": true, "tail": true, "error": true,
	"delay_ms": true, "attempt": true, "reason": true, "message": true, "ready": true,
	"escaped": true, "escaped_stopped": true,
}

// object appends the members of one JSON object in the order they are added.
type object struct {
	buf []byte
	err error
}

func (o *object) add(name string, v any) {
	if o.err != nil {
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		o.err = fmt.Errorf("field %q: %w", name, err)
		return
	}
	o.raw(name, b)
}

func (o *object) raw(name string, b []byte) {
	if len(o.buf) == 0 {
		o.buf = append(o.buf, '{')
	} else {
		o.buf = append(o.buf, ',')
	}
	o.buf = append(o.buf, '"')
	o.buf = append(o.buf, name...)
	o.buf = append(o.buf, '"', ':')
	o.buf = append(o.buf, b...)
}

func (o *object) bytes() []byte { return append(o.buf, '}') }

// encodeEvent flattens ev for the wire: its own fields first, the exit
// record's fields for an exit, then the fields of a layer above (the
// private ones only when private is set), then the snapshot. Fields of a
// layer above that cannot be encoded are left out and reported in skipped.
func encodeEvent(ev procmon.Event, status []byte, private bool) (msg []byte, skipped []error) {
	var o object
	o.add("type", TypeEvent)
	o.add("seq", ev.Seq)
	o.add("at", ev.At)
	o.add("event", ev.Kind)
	if x := ev.Exit; x != nil {
		o.add("pid", x.Pid)
		o.add("code", x.Code)
		o.add("signal", x.Signal)
		if x.Error != "" {
			o.add("returncode", nil) // it never ran
		} else {
			o.add("returncode", x.ReturnCode)
		}
		if x.CoreDumped {
			o.add("core_dumped", true)
		}
		o.add("class", x.Class)
		o.add("requested", x.Requested)
		o.add("uptime_ms", x.UptimeMS)
		tail := x.Tail
		if tail == nil {
			tail = []string{}
		}
		o.add("tail", tail)
		if x.Error != "" {
			o.add("error", x.Error)
		}
		if len(x.Escaped) > 0 {
			o.add("escaped", x.Escaped)
		}
		if x.EscapedStopped {
			o.add("escaped_stopped", true)
		}
	} else {
		if ev.Pid != 0 {
			o.add("pid", ev.Pid)
		}
		if ev.Signal != "" {
			o.add("signal", ev.Signal)
		}
	}
	if ev.Kind == procmon.EventBackoff || ev.DelayMS != 0 {
		o.add("delay_ms", ev.DelayMS)
	}
	if ev.Attempt != 0 {
		o.add("attempt", ev.Attempt)
	}
	if ev.Reason != "" {
		o.add("reason", ev.Reason)
	}
	if ev.Message != "" {
		o.add("message", ev.Message)
	}
	if ev.Ready != nil {
		o.add("ready", *ev.Ready)
	}
	if o.err != nil {
		// Only the monitor's own fields were added so far, and they always
		// encode; keep going without them rather than lose the event.
		skipped = append(skipped, o.err)
		o.err = nil
	}
	extras := func(fields map[string]any) {
		for _, k := range sortedKeys(fields) {
			if reserved[k] || !validName(k) {
				skipped = append(skipped, fmt.Errorf("field %q: name is reserved or not plain", k))
				continue
			}
			o.add(k, fields[k])
			if o.err != nil {
				skipped = append(skipped, o.err)
				o.err = nil
			}
		}
	}
	extras(ev.Data)
	if private {
		extras(ev.Private)
	}
	o.raw("status", status)
	return o.bytes(), skipped
}

// validName accepts the field names a layer above may use: short, and
// needing no escaping in JSON.
func validName(k string) bool {
	if k == "" || len(k) > 64 {
		return false
	}
	for _, r := range k {
		if !(r == '_' || r == '-' || r == '.' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Message is any message from the server, decoded for a client. Fields
// holds every member as sent, for the fields specific to one event kind.
type Message struct {
	Type     string          `json:"type"`
	Protocol int             `json:"protocol"`
	Sidecar  *Sidecar        `json:"sidecar"`
	Control  bool            `json:"control"`
	Seq      uint64          `json:"seq"`
	At       time.Time       `json:"at"`
	Event    procmon.Kind    `json:"event"`
	ID       json.RawMessage `json:"id"`
	OK       bool            `json:"ok"`
	Error    string          `json:"error"`
	Status   *procmon.Status `json:"status"`

	Fields map[string]json.RawMessage `json:"-"`
}

// DecodeMessage parses one message from the server. Unknown types decode
// without error, so a client can skip what it does not know.
func DecodeMessage(b []byte) (Message, error) {
	var m Message
	if err := json.Unmarshal(b, &m.Fields); err != nil || m.Fields == nil {
		return Message{}, fmt.Errorf("not a JSON object: %.80q", b)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return Message{}, fmt.Errorf("malformed %q message: %w", m.Fields["type"], err)
	}
	if m.Type == "" {
		return Message{}, errors.New(`message has no "type"`)
	}
	return m, nil
}

// Field decodes the member name into v. It reports false when the member
// is absent or does not fit v.
func (m Message) Field(name string, v any) bool {
	raw, ok := m.Fields[name]
	return ok && json.Unmarshal(raw, v) == nil
}

// Exit rebuilds the exit record of an exited or spawn_failed event, or
// returns nil for other messages. Its At is the event's time.
func (m Message) Exit() *procmon.ExitRecord {
	if m.Type != TypeEvent || (m.Event != procmon.EventExited && m.Event != procmon.EventSpawnFailed) {
		return nil
	}
	var rec procmon.ExitRecord
	m.Field("pid", &rec.Pid)
	m.Field("code", &rec.Code)
	m.Field("signal", &rec.Signal)
	m.Field("returncode", &rec.ReturnCode)
	m.Field("core_dumped", &rec.CoreDumped)
	m.Field("class", &rec.Class)
	m.Field("requested", &rec.Requested)
	m.Field("uptime_ms", &rec.UptimeMS)
	m.Field("tail", &rec.Tail)
	m.Field("error", &rec.Error)
	rec.At = m.At
	return &rec
}
