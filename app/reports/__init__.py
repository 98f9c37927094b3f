"""Reports: figures and spreadsheets of an organization's subtree for its officers and city
systems.  Statistics (`stats`) and exports (`exports`, `sheets`) read check-ins, activities
with their sign-ups and attendance, and contributions with activity credits; nothing here
writes except the audit entry of an export."""
