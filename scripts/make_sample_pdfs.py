#!/usr/bin/env python3
"""Write the sample PDF documents used by docbot's demo and evaluation sets.

All content is FICTIONAL and invented for software testing.

Each PDF page is written after an explicit page break, so page numbers are
stable (page 1, 2, 3, ...) and the gold "page" fields in eval_sets/*.jsonl
stay valid. Only a core font (Helvetica) and latin-1 text are used.

Usage:
    python3 scripts/make_sample_pdfs.py            # writes into ./Documents
    python3 scripts/make_sample_pdfs.py --out DIR  # writes into DIR instead
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from fpdf import FPDF

MED_NOTICE = "FICTIONAL SAMPLE DOCUMENT - invented for software testing; not medical advice."
LEGAL_NOTICE = "FICTIONAL SAMPLE DOCUMENT - invented for software testing; not legal advice."

# Each document: relative path -> (title, notice, [page_text, ...]).
# In page text, a line starting with "## " is a section heading; blank lines
# separate paragraphs.
DOCUMENTS: dict[str, tuple[str, str, list[str]]] = {}

DOCUMENTS["Medical/formulary.pdf"] = (
    "Harborview Fictional Clinic - Clinic Formulary, Edition 7",
    MED_NOTICE,
    [
        """\
## About this formulary

This formulary lists the medicines approved for use at Harborview Fictional Clinic. It is maintained by the Pharmacy and Therapeutics Committee. The committee is chaired by Dr. Anselm Rooke, consultant physician. Edition 7 of the formulary took effect on 3 March 2025. Changes to the formulary are governed by policy POL-204.

The committee meets on the second Tuesday of every month. Prescribers may only prescribe medicines that appear in this formulary. A medicine that is not listed is called a non-formulary medicine.

## Zorvexin

Zorvexin is an oral anti-inflammatory tablet. Zorvexin is used to treat joint swelling after sports injuries. The tablets are made in two strengths: 10 mg and 25 mg.

The usual adult dose of Zorvexin is 10 mg twice a day. The maximum daily dose of Zorvexin for adults is 40 mg. Zorvexin must be taken with food. Children under 12 years must not receive Zorvexin.

Patients with kidney disease may take no more than 15 mg of Zorvexin per day. The most common side effect of Zorvexin is a metallic taste in the mouth. Staff must stop Zorvexin if the patient develops a skin rash. A course of Zorvexin normally lasts 7 days.
""",
        """\
## Calyprane

Calyprane is an injectable antiviral medicine. Calyprane is used to shorten the course of Tallis fever, a viral illness. Calyprane is given by intramuscular injection.

The adult dose of Calyprane is 150 mg once every 72 hours. A full course of Calyprane is four injections. For children aged 6 to 11 years, the dose is 2 mg per kilogram of body weight.

Calyprane injections are given only in Treatment Room 4. Every patient must be observed for 30 minutes after each Calyprane injection. This observation rule is set by policy POL-219. Calyprane must never be mixed with saline in the same syringe.

## Drevacil

Drevacil is an oral liquid for night-time cough. The adult dose of Drevacil is 5 mL at bedtime. No more than 15 mL of Drevacil may be taken in 24 hours.

Drevacil causes drowsiness. Patients must not drive for 8 hours after a dose of Drevacil. Drevacil is not suitable for pregnant patients. Drevacil has a mild aniseed flavour.
""",
        """\
## Mirtoloxan

Mirtoloxan is a topical cream for fungal skin infections. Patients apply a thin layer of Mirtoloxan three times a day. A standard course of Mirtoloxan lasts 14 days. Mirtoloxan must not be used on the face. Each tube of Mirtoloxan holds 30 grams of cream.

## Quintarel

Quintarel is a nasal spray for seasonal hay fever. The dose of Quintarel is one spray in each nostril once a day. Quintarel is not licensed for children under 4 years. Quintarel may cause a brief stinging feeling in the nose.

## Requesting a non-formulary medicine

A prescriber who needs a non-formulary medicine must complete form PF-12. The completed form goes to the committee secretary, Yusuf Calloway. Requests are reviewed within 5 working days. Urgent requests can be approved by the on-call consultant for a single supply of up to 3 days.

## Reporting side effects

All suspected side effects of formulary medicines must be reported on the yellow Side Effect Card. Completed cards are placed in the tray outside the dispensary hatch.
""",
    ],
)

DOCUMENTS["Medical/infection_control.pdf"] = (
    "Harborview Fictional Clinic - Infection Prevention and Control Manual",
    MED_NOTICE,
    [
        """\
## Scope and lead

This manual explains how Harborview Fictional Clinic prevents the spread of infection. The Infection Control Lead is Dr. Samuel Achterberg. The manual is issued under policy POL-301. It applies to every member of staff, including volunteers and contractors.

## Hand hygiene

Staff must rub their hands with alcohol gel for at least 20 seconds. Hand washing with soap and water must last at least 40 seconds. Soap and water must be used after caring for a patient with diarrhoea. Alcohol gel dispensers are refilled every Monday by the housekeeping team.

Hand hygiene audits take place once a month. The clinic target for hand hygiene compliance is 95 percent. Artificial nails and nail varnish are not allowed in clinical areas. Wrist watches must be removed before direct patient care.

## Personal protective equipment

Gloves must be changed between every patient. Blue aprons are worn for routine personal care. Yellow gowns are worn in isolation rooms. An FFP3 mask is worn when an airborne infection is suspected. Every member of staff who wears FFP3 masks must have a mask fit test every 2 years.
""",
        """\
## Decontamination of instruments

Reusable instruments are cleaned in Decontamination Room B12. Dirty instruments are carried there in red lidded boxes. The clinic autoclave sterilises instruments at 134 degrees Celsius with a holding time of 3 minutes.

Each autoclave cycle is written in the sterilisation log. A steam penetration test is run every morning before the first cycle of the day. If the steam penetration test fails, the autoclave must not be used until an engineer has checked it.

Sterile instrument packs expire 180 days after processing. A pack with damaged or wet wrapping must be processed again. The autoclave is serviced every 6 months by Kestrel Sterile Services.

## Cleaning of clinical areas

Examination couches are wiped with Clorvane wipes between patients. Clorvane is the only surface disinfectant approved by the clinic. Privacy curtains in consulting rooms are replaced every 3 months. Curtains are replaced at once if they are visibly soiled.
""",
        """\
## Clinical waste

Clinical waste is placed in orange bags. Sharps are placed in sharps bins with yellow lids. A sharps bin must be closed when it is three quarters full. Every sharps bin must be labelled with the room number and the date it was opened. Waste is collected on Tuesdays and Fridays by Greyhollow Waste Ltd.

## Blood and body fluid spills

The blood spill kit is stored in cupboard C3 next to the sluice room. Staff put on gloves and an apron before they deal with a spill. The spill is covered with absorbent granules and left for 2 minutes. The area is then cleaned with Clorvane solution.

## Needlestick injuries

After a needlestick injury, encourage the wound to bleed and wash it under running water. Do not scrub the wound. Report the injury to Occupational Health on extension 4410 within 1 hour. The staff member must also complete incident form IR-7 before the end of the shift.
""",
    ],
)

DOCUMENTS["Medical/staff_handbook.pdf"] = (
    "Harborview Fictional Clinic - Staff Handbook",
    MED_NOTICE,
    [
        """\
## Who is who

The Medical Director is Dr. Imelda Okafor. Her office is Room 101 and her extension is 2001. The Medical Director is responsible for clinical standards across the clinic.

The Practice Manager is Hana Brackley. She manages budgets, rotas and building contracts. Her extension is 2002.

The Nurse Manager is Tobias Wrenfield. He leads the nursing team and approves nursing shift swaps. His office is Room 118.

The Clinical Governance Lead is Dr. Rafaela Mund. She runs the quarterly clinical audit meeting.

The HR Advisor is Oskar Penhallow. He handles contracts of employment and recruitment.

IT support is provided by Bettina Sarkis. Staff contact IT support on extension 2404.

## Code of conduct

The staff code of conduct is policy POL-150. Every member of staff must read the code of conduct in their first week.
""",
        """\
## Shifts

The early shift runs from 07:30 to 15:30. The late shift runs from 13:00 to 21:00. Each shift handover lasts 15 minutes. Shift swaps must be agreed by both staff members and approved by the Nurse Manager.

## Annual leave

Full-time staff receive 27 days of annual leave plus public holidays. Leave requests must be made at least 6 weeks in advance. No more than three nurses may take leave in the same week. Unused leave of up to 5 days can be carried into the next leave year.

## Sickness absence

A staff member who is sick must phone the Nurse Manager before 06:45 on the first day of absence. Staff may self-certify sickness for up to 7 calendar days. After that, a fit note from a doctor is needed. A return-to-work interview takes place after every absence.

## Overtime

Overtime must be approved in advance by the Practice Manager. Overtime is paid at one and a half times the normal hourly rate.
""",
        """\
## Induction and training

The induction programme for new staff lasts 3 days. New staff wear a green lanyard during their first 4 weeks. Basic Life Support training must be renewed every 12 months. Fire safety training is also renewed every 12 months. Information governance training is completed online every year.

## Appearance and identification

Registered nurses wear navy uniforms. Healthcare assistants wear grey uniforms. Staff ID badges must be visible at all times. A lost badge must be reported to the security desk on extension 2099. A replacement badge costs 10 pounds.

## Appraisal

Every member of staff has an appraisal once a year in April. The appraisal is carried out by the line manager.

## Speaking up

Staff can raise concerns with the Freedom to Speak Up Guardian. The Guardian is Nadia Ferreira-Holt. Concerns can be raised in confidence.
""",
    ],
)

DOCUMENTS["Legal/engagement_terms.pdf"] = (
    "Fictional Brightwater & Vale LLP - Standard Terms of Engagement",
    LEGAL_NOTICE,
    [
        """\
## Fees and billing

These terms apply to every client matter handled by Brightwater & Vale LLP. The hourly rate for a partner is 420 pounds. The hourly rate for an associate is 260 pounds. The hourly rate for a trainee solicitor is 140 pounds.

New clients pay a retainer of 5,000 pounds before work begins. The firm sends invoices at the end of each calendar month. Each invoice must be paid within 21 days of the invoice date. Late invoices attract interest at 2 percent per month.

## Opening a matter

The firm opens a matter only after a conflict check. The conflict check is carried out by the Compliance Team. The client receives a matter number in the format BV-YYYY-NNNN. The client relationship partner is named in the engagement letter.
""",
        """\
## Contract termination clauses

Clause 12.1: Either party may terminate the engagement by giving 30 days written notice.

Clause 12.2: The client may terminate the engagement immediately if the firm commits a material breach of these terms.

Clause 12.3: The firm may terminate the engagement on 14 days notice if any invoice remains unpaid for 60 days.

Clause 12.4: On termination, the client pays for all work done up to the termination date. The client also pays a file closing fee of 250 pounds. No other termination fee is charged.

Clause 12.5: After termination, the firm transfers the client files within 10 working days of a written request.

Clause 12.6: The firm keeps a copy of closed files for 7 years.

## Complaints

Complaints about the firm go to the Client Care Partner, Rosalind Achebe. The firm responds to a complaint within 8 weeks.
""",
    ],
)


def build_pdf(title: str, notice: str, pages: list[str], path: Path) -> None:
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(20, 20, 20)
    pdf.set_title(title)
    pdf.set_author("Fictional sample data for docbot")
    # Fixed date so re-running the script gives byte-identical PDFs.
    pdf.set_creation_date(datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc))
    for page_no, text in enumerate(pages, start=1):
        pdf.add_page()  # one explicit page per logical page
        if page_no == 1:
            pdf.set_font("Helvetica", "B", 15)
            pdf.multi_cell(0, 8, title, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(1)
        pdf.set_font("Helvetica", "I", 9)
        pdf.multi_cell(0, 5, notice, new_x="LMARGIN", new_y="NEXT")
        pdf.ln(3)
        for block in text.strip().split("\n\n"):
            block = " ".join(block.split())
            if block.startswith("## "):
                pdf.ln(2)
                pdf.set_font("Helvetica", "B", 12)
                pdf.multi_cell(0, 7, block[3:], new_x="LMARGIN", new_y="NEXT")
            else:
                pdf.set_font("Helvetica", "", 11)
                pdf.multi_cell(0, 6, block, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
        if pdf.page_no() != page_no:
            raise RuntimeError(f"{path}: page {page_no} overflowed onto a new page; shorten it")
        pdf.set_auto_page_break(auto=False)
        pdf.set_y(-14)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(0, 5, f"Page {page_no} of {len(pages)}", align="C")
        pdf.set_auto_page_break(auto=True, margin=18)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "Documents"))
    args = parser.parse_args()
    out = Path(args.out)
    for rel, (title, notice, pages) in DOCUMENTS.items():
        for text in [title, notice, *pages]:
            text.encode("latin-1")  # raises if a non-latin-1 character slipped in
        path = out / rel
        build_pdf(title, notice, pages, path)
        print(f"wrote {path} ({len(pages)} pages)")


if __name__ == "__main__":
    main()
