package install

// EventType says what an Event reports.
type EventType int

const (
	// EventInfo is a step's progress message.
	EventInfo EventType = iota
	// EventApplied: Object was applied.
	EventApplied
	// EventPruned: Object was deleted because the new rendering no longer
	// holds it.
	EventPruned
	// EventDeleted: uninstall deleted Object.
	EventDeleted
	// EventWaiting: the control plane is not ready yet; Status says why.
	EventWaiting
	// EventReady: the control plane is ready.
	EventReady
	// EventWarning is something the user should know that does not stop the
	// command.
	EventWarning
)

// Event is one step of progress. Commands render events on the error stream
// as they come.
type Event struct {
	Type    EventType
	Object  Ref
	Message string
	Status  []WorkloadStatus
}

// Observer receives progress events; it must not block for long.
type Observer func(Event)

func (o Observer) orDiscard() Observer {
	if o == nil {
		return func(Event) {}
	}
	return o
}
