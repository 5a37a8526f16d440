package engine_test

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
)

// chanSink forwards deliveries to a channel large enough never to block.
type chanSink chan engine.Delivery

func (c chanSink) Deliver(d engine.Delivery) { c <- d }

// TestConcurrentPublishConsumeExactlyOnce runs publishers and consumers at
// once over a tiny window, so commits, refills and redeliveries race, and
// checks that every message is acked exactly once.
func TestConcurrentPublishConsumeExactlyOnce(t *testing.T) {
	const publishers, perPublisher, consumers = 6, 400, 3
	total := publishers * perPublisher
	b, err := engine.Open(memstore.New(), engine.Config{WindowSize: 8, Default: engine.Policy{MaxDeliveries: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	var mu sync.Mutex
	acked := make(map[string]int)
	done := make(chan struct{})
	var wg sync.WaitGroup
	for i := range consumers {
		ch := make(chanSink, total+16)
		c, err := b.Consume("q", ch, engine.ConsumeOptions{Credit: 5})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 7))
			for {
				select {
				case <-done:
					return
				case d := <-ch:
					if r.IntN(5) == 0 {
						if err := c.Release(d.Tag); err != nil {
							t.Error(err)
						}
						continue
					}
					if err := c.Ack(false, d.Tag); err != nil {
						t.Error(err)
					}
					mu.Lock()
					acked[string(d.Msg.Body)]++
					n := len(acked)
					mu.Unlock()
					if n == total {
						close(done)
					}
				}
			}
		}(uint64(i))
	}
	var pwg sync.WaitGroup
	for p := range publishers {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := range perPublisher {
				body := fmt.Sprintf("p%d-%d", p, i)
				if err := b.Publish(&engine.Message{Topic: "q", ToQueue: true, Body: []byte(body), QoS: 1}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	pwg.Wait()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		mu.Lock()
		t.Fatalf("only %d of %d messages acked", len(acked), total)
	}
	wg.Wait()
	for body, n := range acked {
		if n != 1 {
			t.Errorf("%s acked %d times", body, n)
		}
	}
	if info, _ := b.QueueInfo("q"); info.Messages != 0 {
		t.Errorf("queue still holds %d", info.Messages)
	}
}
