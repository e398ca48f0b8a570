package conn

// Gathered payloads: an event (Delivery.Parts) or a reply (Result.Parts)
// whose payload is the concatenation of parts, written into the ring piece
// by piece as each frame spans them, never joined first. Only an event that
// has to wait in the queue is joined, into the copy it needs anyway.

// size is the length of d's payload.
func (d *Delivery) size() int {
	if d.Parts != nil {
		return partsLen(d.Parts)
	}
	return len(d.Payload)
}

// span returns the pieces of d's payload from byte off, n bytes long, in
// buf while they fit.
func (d *Delivery) span(buf *[4][]byte, off, n int) [][]byte {
	if d.Parts == nil {
		return append(buf[:0], d.Payload[off:off+n])
	}
	out := buf[:0]
	for _, p := range d.Parts {
		if n == 0 {
			break
		}
		if off >= len(p) {
			off -= len(p)
			continue
		}
		take := min(n, len(p)-off)
		out = append(out, p[off:off+take])
		off, n = 0, n-take
	}
	return out
}

// KeptParts returns an event whose payload is gathered from parts, which
// nobody changes or reuses: queued behind a full ring, it is kept as it
// is, not joined into a copy (another node's message, which the node
// owns once it has it).
func KeptParts(service, command uint16, parts ...[]byte) *Delivery {
	return &Delivery{Service: service, Command: command, Parts: parts, owned: true}
}

// Size returns the length of d's payload.
func (d *Delivery) Size() int { return d.size() }

// own makes d's payload a copy of its own, joining its parts: an event
// that waits in the queue must outlive its sender's buffers.
func (d *Delivery) own() {
	if d.owned {
		return
	}
	if d.Parts == nil {
		d.Payload = append([]byte(nil), d.Payload...)
		return
	}
	b := make([]byte, 0, partsLen(d.Parts))
	for _, p := range d.Parts {
		b = append(b, p...)
	}
	d.Payload, d.Parts = b, nil
}

// size is the length of r's payload.
func (r *Result) size() int {
	if r.Parts != nil {
		return partsLen(r.Parts)
	}
	return len(r.Payload)
}

func partsLen(parts [][]byte) int {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	return n
}

// SendEventParts is SendEvent with the payload gathered from parts: parts
// (the slice and the bytes) are shared, not copied, until the event
// reaches the ring or the queue, and must stay unchanged until then.
func (c *Endpoint) SendEventParts(service, command uint16, parts [][]byte) {
	if !c.admit(1, int64(partsLen(parts))) {
		c.lateDrops.Add(1)
		return
	}
	c.sys.Root.Send(c.pid, &Delivery{Service: service, Command: command, Parts: parts, counted: true})
}
