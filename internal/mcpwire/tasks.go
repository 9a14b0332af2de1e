package mcpwire

import "fmt"

// Task methods a client may send (MCP 2025-11-25 tasks, and the 2026-07-28
// io.modelcontextprotocol/tasks extension). Every one but tasks/list names
// one task by params.taskId.
var taskMethods = map[string]bool{
	"tasks/get":    true,
	"tasks/result": true,
	"tasks/cancel": true,
	"tasks/update": true,
}

// IsTaskMethod reports whether method is a task method that names one task
// (tasks/get, tasks/result, tasks/cancel, tasks/update); tasks/list, which
// names none, is not one.
func IsTaskMethod(method string) bool { return taskMethods[method] }

// TaskID returns params.taskId of a task method (see IsTaskMethod): a
// non-empty string without control characters.
func (m *Message) TaskID() (string, error) {
	return m.stringParam("tasks params", "taskId", "tasks/get", "tasks/result", "tasks/cancel", "tasks/update")
}

// Keys of the 2026-07-28 per-request client capabilities that declare the
// tasks extension: params._meta[metaKeyClientCapabilities].extensions[ExtTasks].
const (
	metaKeyClientCapabilities = "io.modelcontextprotocol/clientCapabilities"
	// ExtTasks is the name of the MCP tasks extension (2026-07-28).
	ExtTasks = "io.modelcontextprotocol/tasks"
)

// TaskRequest reports whether the answer to request m may be a task handle
// rather than its result: params.task is an object (MCP 2025-11-25 task
// augmentation), or the client capabilities in params._meta declare the
// tasks extension (MCP 2026-07-28, where the server then decides per
// request whether to create a task). Keys that differ from the ones read
// only in case are ErrCaseVariantKey; a params.task that is neither an
// object nor null is ErrInvalidParams. Params that are absent or not an
// object ask for no task.
func (m *Message) TaskRequest() (bool, error) {
	const op = "task request"
	p, err := m.validParams()
	if err != nil || len(p) == 0 || p[0] != '{' {
		return false, err
	}
	task := false
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, "task", "_meta")
		if err != nil {
			return false, fmt.Errorf("%s: %w", op, err)
		}
		switch {
		case i == 0 && v[0] == '{':
			task = true
		case i == 0 && v[0] != 'n':
			return false, fmt.Errorf("%s: %w", op, invalidParams("task must be an object"))
		case i == 1 && v[0] == '{':
			caps, err := member(v, metaKeyClientCapabilities)
			if err == nil {
				caps, err = member(caps, "extensions")
			}
			if err == nil {
				caps, err = member(caps, ExtTasks)
			}
			if err != nil {
				return false, fmt.Errorf("%s: _meta: %w", op, err)
			}
			task = task || caps != nil
		}
	}
	return task, nil
}

// member returns the value of key in the object obj, or nil when obj is
// nil or not an object or has no such key. A key that differs from key
// only in case is ErrCaseVariantKey.
func member(obj []byte, key string) ([]byte, error) {
	if len(obj) == 0 || obj[0] != '{' {
		return nil, nil
	}
	it := newObjIter(obj)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, key)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			return v, nil
		}
	}
	return nil, nil
}

// CreatedTaskID reports the task id when m is a success response carrying a
// task handle instead of a result: a CreateTaskResult, whose task id is
// result.task.taskId in MCP 2025-11-25 and result.taskId with
// result.resultType "task" in the 2026-07-28 tasks extension.
func (m *Message) CreatedTaskID() (string, bool) {
	if m.Kind != KindResponse || len(m.Result) == 0 {
		return "", false
	}
	r := m.Result
	if !sameSlice(r, m.result) {
		if Validate(r, Limits{MaxBytes: len(r)}) != nil {
			return "", false
		}
		r = trimValue(r)
	}
	if r[0] != '{' {
		return "", false
	}
	var taskObj, taskID []byte
	isTask := false
	it := newObjIter(r)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		switch string(k) {
		case "task":
			taskObj = v
		case "taskId":
			taskID = v
		case "resultType":
			isTask = v[0] == '"' && string(stringBytes(nil, v)) == "task"
		}
	}
	if isTask && taskID != nil {
		id, err := nameValue("taskId", taskID)
		return id, err == nil
	}
	if taskObj == nil || taskObj[0] != '{' {
		return "", false
	}
	it = newObjIter(taskObj)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if string(k) == "taskId" {
			id, err := nameValue("taskId", v)
			return id, err == nil
		}
	}
	return "", false
}

// ListenFilter is what a subscriptions/listen request (MCP 2026-07-28) opts
// in to.
type ListenFilter struct {
	ToolsListChanged     bool
	PromptsListChanged   bool
	ResourcesListChanged bool
	// ResourceSubscriptions are the resource URIs whose
	// notifications/resources/updated the client wants: the successor of
	// resources/subscribe, so each one must be decided like it.
	ResourceSubscriptions []string
}

// Listen reads params.notifications of a subscriptions/listen request. Keys
// that differ from the ones read only in case are ErrCaseVariantKey; a
// resource URI must be a non-empty string without control characters.
func (m *Message) Listen() (ListenFilter, error) {
	const op = "subscriptions/listen params"
	p, err := m.paramsObject(op, "subscriptions/listen")
	if err != nil {
		return ListenFilter{}, err
	}
	var f ListenFilter
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, "notifications")
		if err != nil {
			return ListenFilter{}, fmt.Errorf("%s: %w", op, err)
		}
		if i != 0 {
			continue
		}
		if v[0] != '{' {
			return ListenFilter{}, fmt.Errorf("%s: %w", op, invalidParams("notifications must be an object"))
		}
		nit := newObjIter(v)
		for nk, nv, ok := nit.next(); ok; nk, nv, ok = nit.next() {
			j, err := keyIndex(nk, "toolsListChanged", "promptsListChanged", "resourcesListChanged", "resourceSubscriptions")
			if err != nil {
				return ListenFilter{}, fmt.Errorf("%s: notifications: %w", op, err)
			}
			if j >= 0 && j < 3 && nv[0] != 't' && nv[0] != 'f' {
				return ListenFilter{}, fmt.Errorf("%s: %w", op, invalidParams("%s must be a boolean", nk))
			}
			switch j {
			case 0:
				f.ToolsListChanged = nv[0] == 't'
			case 1:
				f.PromptsListChanged = nv[0] == 't'
			case 2:
				f.ResourcesListChanged = nv[0] == 't'
			case 3:
				if nv[0] != '[' {
					return ListenFilter{}, fmt.Errorf("%s: %w", op, invalidParams("resourceSubscriptions must be an array"))
				}
				ai := newArrIter(nv, 0)
				for uv, ok := ai.next(); ok; uv, ok = ai.next() {
					uri, err := nameValue("resourceSubscriptions entry", uv)
					if err != nil {
						return ListenFilter{}, fmt.Errorf("%s: %w", op, err)
					}
					f.ResourceSubscriptions = append(f.ResourceSubscriptions, uri)
				}
			}
		}
	}
	return f, nil
}
