// Package layers holds no code: its test keeps the import rule of
// ARCHITECTURE.md, which says which layer each package is in and which
// layers it may import.
package layers
