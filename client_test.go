package switchboard

import (
	"context"
	"errors"
	"testing"
)

func TestConnData(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	if c.Data() != nil {
		t.Fatal("data before SetData")
	}
	c.SetData("mine")
	if c.Data() != "mine" {
		t.Fatal("data lost")
	}
}

func TestCloseIsIdempotent(t *testing.T) {
	n := startNode(t)
	c := dial(t, n)
	c.Close()
	c.Close()
	if _, err := c.Call(context.Background(), SystemService, SysPing, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
	n.Close()
	n.Close()
}
