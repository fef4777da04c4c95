// Stands in for Protégé in the tests: the OWL API (the library Protégé is built on) loads
// the lesion ontology, checks the OWL 2 DL profile, saves it in each of Protégé's formats
// and makes the edits an ontology editor makes. Compiled by tests/test_ontology_owlapi.py
// against Debian's libowlapi-java.
//
//   profile IN                      print "violations N", then one line per violation
//   save IN OUTDIR                  write lesion.{rdf.owl,owx,ttl,ofn,omn} (one per format)
//   add-class IN OUT IRI LABEL SYNONYM CATEGORY PARENT_IRI LESANET_INDEX
//   add-disjoint IN OUT IRI_A IRI_B
import java.io.File;
import java.util.List;
import org.semanticweb.owlapi.apibinding.OWLManager;
import org.semanticweb.owlapi.formats.FunctionalSyntaxDocumentFormat;
import org.semanticweb.owlapi.formats.ManchesterSyntaxDocumentFormat;
import org.semanticweb.owlapi.formats.OWLXMLDocumentFormat;
import org.semanticweb.owlapi.formats.RDFXMLDocumentFormat;
import org.semanticweb.owlapi.formats.TurtleDocumentFormat;
import org.semanticweb.owlapi.model.AddAxiom;
import org.semanticweb.owlapi.model.IRI;
import org.semanticweb.owlapi.model.OWLAnnotationProperty;
import org.semanticweb.owlapi.model.OWLClass;
import org.semanticweb.owlapi.model.OWLDataFactory;
import org.semanticweb.owlapi.model.OWLDocumentFormat;
import org.semanticweb.owlapi.model.OWLOntology;
import org.semanticweb.owlapi.model.OWLOntologyManager;
import org.semanticweb.owlapi.model.PrefixManager;
import org.semanticweb.owlapi.profiles.OWL2DLProfile;
import org.semanticweb.owlapi.profiles.OWLProfileReport;
import org.semanticweb.owlapi.profiles.OWLProfileViolation;
import org.semanticweb.owlapi.vocab.OWL2Datatype;

public final class OwlTool {
    private static final String LESION = "https://w3id.org/lesanet/lesion#";
    private static final String SKOS = "http://www.w3.org/2004/02/skos/core#";

    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: OwlTool profile|save|add-class|add-disjoint IN ...");
            System.exit(2);
        }
        OWLOntologyManager manager = OWLManager.createOWLOntologyManager();
        OWLOntology ontology = manager.loadOntologyFromOntologyDocument(new File(args[1]));
        switch (args[0]) {
            case "profile": profile(ontology); break;
            case "save": saveAll(manager, ontology, new File(args[2])); break;
            case "add-class": addClass(manager, ontology, args); break;
            case "add-disjoint": addDisjoint(manager, ontology, args); break;
            default:
                System.err.println("unknown command " + args[0]);
                System.exit(2);
        }
    }

    private static void profile(OWLOntology ontology) {
        OWLProfileReport report = new OWL2DLProfile().checkOntology(ontology);
        List<OWLProfileViolation> violations = report.getViolations();
        System.out.println("violations " + violations.size());
        for (OWLProfileViolation v : violations) {
            System.out.println(v.toString().replace('\n', ' '));
        }
    }

    private static void saveAll(OWLOntologyManager manager, OWLOntology ontology, File dir) throws Exception {
        dir.mkdirs();
        save(manager, ontology, new RDFXMLDocumentFormat(), new File(dir, "lesion.rdf.owl"));
        save(manager, ontology, new OWLXMLDocumentFormat(), new File(dir, "lesion.owx"));
        save(manager, ontology, new TurtleDocumentFormat(), new File(dir, "lesion.ttl"));
        save(manager, ontology, new FunctionalSyntaxDocumentFormat(), new File(dir, "lesion.ofn"));
        save(manager, ontology, new ManchesterSyntaxDocumentFormat(), new File(dir, "lesion.omn"));
    }

    private static void save(OWLOntologyManager manager, OWLOntology ontology, OWLDocumentFormat format, File file)
            throws Exception {
        // Keep the prefixes of the loaded document, as Protégé does on "Save as".
        OWLDocumentFormat loaded = manager.getOntologyFormat(ontology);
        if (loaded != null && loaded.isPrefixOWLDocumentFormat() && format.isPrefixOWLDocumentFormat()) {
            format.asPrefixOWLDocumentFormat().copyPrefixesFrom(loaded.asPrefixOWLDocumentFormat());
        }
        manager.saveOntology(ontology, format, IRI.create(file.toURI()));
        System.out.println("saved " + file);
    }

    private static void addClass(OWLOntologyManager manager, OWLOntology ontology, String[] a) throws Exception {
        OWLDataFactory df = manager.getOWLDataFactory();
        OWLClass cls = df.getOWLClass(IRI.create(a[3]));
        OWLAnnotationProperty category = df.getOWLAnnotationProperty(IRI.create(LESION + "category"));
        OWLAnnotationProperty index = df.getOWLAnnotationProperty(IRI.create(LESION + "lesanetIndex"));
        OWLAnnotationProperty altLabel = df.getOWLAnnotationProperty(IRI.create(SKOS + "altLabel"));
        manager.addAxiom(ontology, df.getOWLDeclarationAxiom(cls));
        manager.addAxiom(ontology, df.getOWLAnnotationAssertionAxiom(cls.getIRI(), df.getRDFSLabel(a[4])));
        manager.addAxiom(ontology, df.getOWLAnnotationAssertionAxiom(altLabel, cls.getIRI(), df.getOWLLiteral(a[5])));
        manager.addAxiom(ontology, df.getOWLAnnotationAssertionAxiom(category, cls.getIRI(), df.getOWLLiteral(a[6])));
        manager.addAxiom(ontology, df.getOWLSubClassOfAxiom(cls, df.getOWLClass(IRI.create(a[7]))));
        manager.addAxiom(ontology, df.getOWLAnnotationAssertionAxiom(index, cls.getIRI(),
                df.getOWLLiteral(a[8], OWL2Datatype.XSD_INTEGER)));
        save(manager, ontology, new RDFXMLDocumentFormat(), new File(a[2]));
    }

    private static void addDisjoint(OWLOntologyManager manager, OWLOntology ontology, String[] a) throws Exception {
        OWLDataFactory df = manager.getOWLDataFactory();
        manager.addAxiom(ontology, df.getOWLDisjointClassesAxiom(
                df.getOWLClass(IRI.create(a[3])), df.getOWLClass(IRI.create(a[4]))));
        save(manager, ontology, new RDFXMLDocumentFormat(), new File(a[2]));
    }
}
