package switchboard

import (
	"errors"
	"testing"
)

// TestPublishRefusal: a want-answer publication no member took says why:
// its members' links refused it, members here could not take its size,
// or its members all left as it was sent (none of the first two).
func TestPublishRefusal(t *testing.T) {
	for _, c := range []struct {
		took, lost, tooBig int
		want               error
	}{
		{took: 1, lost: 2, tooBig: 1, want: nil},
		{lost: 2, tooBig: 1, want: ErrUndeliverable},
		{tooBig: 1, want: ErrTooLarge},
		{want: ErrUndeliverable}, // the remote members left between the look and the send
	} {
		err := publishRefusal("g", c.took, c.lost, c.tooBig, 100)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("took %d, lost %d, too big %d: %v, want %v", c.took, c.lost, c.tooBig, err, c.want)
		}
	}
}
