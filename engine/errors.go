package engine

import "errors"

// Errors returned by the engine. Adapters translate them at the edge: STOMP
// into ERROR frames, MQTT into reason codes.
var (
	ErrClosed         = errors.New("engine: closed")
	ErrQueueFull      = errors.New("engine: queue full")
	ErrNoQueue        = errors.New("engine: no such queue")
	ErrQueueExists    = errors.New("engine: queue exists with other settings")
	ErrTooManyQueues  = errors.New("engine: too many queues")
	ErrDiskFull       = errors.New("engine: free disk space is under the limit")
	ErrInvalidTopic   = errors.New("engine: invalid topic name")
	ErrInvalidFilter  = errors.New("engine: invalid topic filter")
	ErrInvalidQueue   = errors.New("engine: invalid queue name")
	ErrUnknownTag     = errors.New("engine: unknown delivery tag")
	ErrTxnDone        = errors.New("engine: transaction already committed or aborted")
	ErrConsumerClosed = errors.New("engine: consumer closed")
	ErrInvalidPolicy  = errors.New("engine: invalid policy")
	ErrCorrupt        = errors.New("engine: corrupt stored data")
	ErrInvalidKV      = errors.New("engine: invalid key-value operation")
	ErrSubClosed      = errors.New("engine: topic subscription closed")
)
