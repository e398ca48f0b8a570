package switchboard

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
)

// TestSessions: per-service accept checks, connect and disconnect hooks,
// and private data kept per (connection, service).
func TestSessions(t *testing.T) {
	n := startNode(t)
	var mu sync.Mutex
	var connected, disconnected []uint64
	n.HandleFunc(1, func(ctx context.Context, r *Request) ([]byte, error) {
		count, _ := r.Session.Data.(int)
		r.Session.Data = count + 1
		return []byte(fmt.Sprint(count + 1)), nil
	},
		WithOnConnect(func(s *Session) error {
			mu.Lock()
			connected = append(connected, s.ConnID())
			mu.Unlock()
			s.Data = 100
			return nil
		}),
		WithOnDisconnect(func(s *Session) {
			mu.Lock()
			disconnected = append(disconnected, s.ConnID())
			mu.Unlock()
		}))
	n.HandleFunc(2, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil },
		WithAccept(func(c Cred) bool { return false }))
	n.HandleFunc(3, func(ctx context.Context, r *Request) ([]byte, error) { return nil, nil },
		WithOnConnect(func(s *Session) error { return errors.New("not today") }))

	a, b := dial(t, n), dial(t, n)
	ctx := context.Background()
	for i, want := range []string{"101", "102", "103"} {
		got, err := a.Call(ctx, 1, 0, nil)
		if err != nil || string(got) != want {
			t.Fatalf("call %d on a: %q %v", i, got, err)
		}
	}
	if got, err := b.Call(ctx, 1, 0, nil); err != nil || string(got) != "101" {
		t.Fatalf("b has its own session: %q %v", got, err)
	}
	if _, err := a.Call(ctx, 2, 0, nil); !errors.Is(err, ErrRefused) {
		t.Fatalf("refused by accept: %v", err)
	}
	if _, err := a.Call(ctx, 3, 0, nil); !errors.Is(err, ErrRefused) || !contains(err.Error(), "not today") {
		t.Fatalf("refused by connect hook: %v", err)
	}
	a.Close()
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(disconnected) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if len(connected) != 2 || disconnected[0] != a.ID() {
		t.Fatalf("connected %v, disconnected %v (a is %d)", connected, disconnected, a.ID())
	}
}

// TestSelector: a service nobody registered is served by the selector.
func TestSelector(t *testing.T) {
	n := startNode(t, WithSelector(func(service, command uint16) Handler {
		if service >= 1000 && service < 2000 {
			return HandlerFunc(func(ctx context.Context, r *Request) ([]byte, error) {
				return []byte(fmt.Sprint(r.Service, "/", r.Command)), nil
			})
		}
		return nil
	}))
	c := dial(t, n)
	if got, err := c.Call(context.Background(), 1234, 5, nil); err != nil || string(got) != "1234/5" {
		t.Fatalf("selected: %q %v", got, err)
	}
	if _, err := c.Call(context.Background(), 2000, 5, nil); !errors.Is(err, ErrUnknownService) {
		t.Fatalf("not selected: %v", err)
	}
}

// echoActor serves ActorRequests, replying after a hop through its mailbox.
type echoActor struct{}

func (echoActor) Receive(ac actor.Context) {
	if r, ok := ac.Message().(*ActorRequest); ok {
		if err := r.Context.Err(); err != nil {
			r.Respond(nil, fmt.Errorf("context already ended: %w", err))
			return
		}
		if r.Command == 2 {
			r.Respond(nil, errors.New("actor says no"))
			return
		}
		r.Respond(append([]byte("actor: "), r.Payload...), nil)
	}
}

func TestActorHandler(t *testing.T) {
	n := startNode(t)
	if _, err := n.HandleActor(9, actor.PropsFromProducer(func() actor.Actor { return echoActor{} })); err != nil {
		t.Fatal(err)
	}
	c := dial(t, n)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			p := []byte(fmt.Sprint(i))
			got, err := c.Call(context.Background(), 9, 1, p)
			if err != nil || string(got) != "actor: "+string(p) {
				t.Errorf("actor call: %q %v", got, err)
			}
		})
	}
	wg.Wait()
	if _, err := c.Call(context.Background(), 9, 2, nil); !errors.Is(err, ErrHandler) {
		t.Fatalf("actor error: %v", err)
	}
}
