package memstore_test

import (
	"testing"

	"github.com/tandem-mq/tandem/engine"
	"github.com/tandem-mq/tandem/engine/memstore"
	"github.com/tandem-mq/tandem/engine/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) engine.Store { return memstore.New() })
}
