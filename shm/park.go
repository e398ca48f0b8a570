package shm

import "context"

// A Cond is something a goroutine sleeps on until a doorbell rings: data
// in a ring (a *Consumer) or room in one (Producer.Space). Arm announces
// that the goroutine is about to sleep (the other side rings the doorbell
// when it changes the condition), Rearm announces it again, Disarm takes
// the announcement back.
type Cond interface {
	Arm()
	Rearm()
	Disarm()
}

// Space returns the condition "room in p's ring", for Park.
func (p *Producer) Space() Cond { return spaceCond{p} }

type spaceCond struct{ p *Producer }

func (s spaceCond) Arm()    { s.p.ArmSpace() }
func (s spaceCond) Rearm()  { s.p.RearmSpace() }
func (s spaceCond) Disarm() { s.p.DisarmSpace() }

// A Parker parks one goroutine again and again on a doorbell: the one
// sleep of a pump, on either end of a connection, and of the socket
// transport's writer. It parks without an allocation when ready is a
// function value made once and conds a slice made once. It is not safe
// for concurrent use.
type Parker struct {
	bell  *Doorbell
	ready func() bool
	conds []Cond
	check func() bool // rearmReady, bound once
	slot  int         // index in the harvest list (harvest.go), -1 when not listed; under harvest.mu
}

// NewParker returns a Parker sleeping on bell.
func NewParker(bell *Doorbell) *Parker {
	p := &Parker{bell: bell, slot: -1}
	p.check = p.rearmReady
	return p
}

// Park sleeps until ready reports true, then disarms conds. The caller
// arms conds (Arm) and looks once more before it calls Park; a doorbell
// rings for an announcement only once, so before every later look Park
// announces them again (Rearm), or a wake-up that found too little would
// sleep through the next change. The error is ErrClosed once the doorbell
// is closed.
//
// Before it sleeps, Park wakes the other Parkers of the process whose
// rings filled while the netpoller was not looking, and lists itself for
// them during its first re-check intervals (harvest.go).
func (p *Parker) Park(ready func() bool, conds ...Cond) error {
	p.ready, p.conds = ready, conds
	harvestSweep()
	err := p.bell.waitUntil(context.Background(), p.check, p)
	for _, c := range conds {
		c.Disarm()
	}
	p.ready, p.conds = nil, nil
	return err
}

func (p *Parker) rearmReady() bool {
	for _, c := range p.conds {
		c.Rearm()
	}
	return p.ready()
}
