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

// Park sleeps on bell until ready reports true, then disarms conds: the
// one sleep of a pump, on either end of a connection. The caller arms
// conds (Arm) and looks once more before it calls Park; a doorbell rings
// for an announcement only once, so before every later look Park announces
// them again (Rearm), or a wake-up that found too little would sleep
// through the next change. The error is ErrClosed once bell is closed.
func Park(bell *Doorbell, ready func() bool, conds ...Cond) error {
	err := bell.WaitUntil(context.Background(), func() bool {
		for _, c := range conds {
			c.Rearm()
		}
		return ready()
	})
	for _, c := range conds {
		c.Disarm()
	}
	return err
}
