package switchboard

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"slices"
	"strings"
	"testing"
)

// TestActorTypesOnlyInActorAPI checks what doc.go's "Actors are optional"
// says: of the package's exported identifiers, only the actor options and
// methods mention protoactor's types (in a signature, an exported field
// or method, a type definition), so that a program that uses no actors
// never needs them.
func TestActorTypesOnlyInActorAPI(t *testing.T) {
	allowed := []string{"WithEventActor", "WithRequestActor", "Node.HandleActor", "Node.ActorSystem"}
	fset := token.NewFileSet()
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, e.Name(), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		actorName := "" // the name protoactor's actor package has in this file
		for _, imp := range f.Imports {
			if imp.Path.Value == `"github.com/asynkron/protoactor-go/actor"` {
				actorName = "actor"
				if imp.Name != nil {
					actorName = imp.Name.Name
				}
			}
		}
		if actorName == "" {
			continue
		}
		mentions := func(n ast.Node) bool {
			hit := false
			ast.Inspect(n, func(n ast.Node) bool {
				if sel, ok := n.(*ast.SelectorExpr); ok {
					if id, ok := sel.X.(*ast.Ident); ok && id.Name == actorName {
						hit = true
					}
				}
				return !hit
			})
			return hit
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				name := d.Name.Name
				if d.Recv != nil {
					recv := d.Recv.List[0].Type
					if st, ok := recv.(*ast.StarExpr); ok {
						recv = st.X
					}
					id, ok := recv.(*ast.Ident)
					if !ok || !id.IsExported() {
						continue
					}
					name = id.Name + "." + name
				}
				if d.Name.IsExported() && mentions(d.Type) {
					found = append(found, name)
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() && exportedPartsMention(s.Type, mentions) {
							found = append(found, s.Name.Name)
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() && ((s.Type != nil && mentions(s.Type)) || slices.ContainsFunc(s.Values, func(e ast.Expr) bool { return mentions(e) })) {
								found = append(found, n.Name)
							}
						}
					}
				}
			}
		}
	}
	for _, name := range found {
		if !slices.Contains(allowed, name) {
			t.Errorf("%s mentions a protoactor type: a program without actors would need it (see doc.go, Actors are optional)", name)
		}
	}
	for _, name := range allowed {
		if !slices.Contains(found, name) {
			t.Errorf("%s no longer mentions a protoactor type: update doc.go's list and this test", name)
		}
	}
}

// exportedPartsMention reports whether a type's exported parts (all of
// it, but a struct's or interface's unexported fields and methods)
// mention a protoactor type.
func exportedPartsMention(typ ast.Expr, mentions func(ast.Node) bool) bool {
	var fields *ast.FieldList
	switch t := typ.(type) {
	case *ast.StructType:
		fields = t.Fields
	case *ast.InterfaceType:
		fields = t.Methods
	default:
		return mentions(typ)
	}
	for _, f := range fields.List {
		exported := len(f.Names) == 0 // embedded
		for _, n := range f.Names {
			exported = exported || n.IsExported()
		}
		if exported && mentions(f.Type) {
			return true
		}
	}
	return false
}
